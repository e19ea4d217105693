"""Per-camera monitoring, pure: image signals, drift and change detectors, outlier scores, device faults.

Every detector has River's shape: ``__init__`` stores parameters, ``update(...)`` changes state and returns
``self``, the verdict is a property (``drift_detected``, ``is_outlier``, ``faults``...), and ``to_dict()`` /
``from_dict()`` carry the state through a Kafka changelog. Nothing here knows about Kafka or faust.
"""
