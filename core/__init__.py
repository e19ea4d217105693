"""The core every part of cvops imports, and that imports none of them.

- :mod:`core.contracts`: the typed record of every topic, and the one way to encode and decode them.
- :mod:`core.settings`: every setting, read from ``CVOPS_*`` environment variables.
- :mod:`core.topology`: every topic with its partitions, retention and contract.
- :mod:`core.kafka`: the Kafka client options (security) shared by every client.
- :mod:`core.skips` and :mod:`core.supervise`: skipping a bad record once in the log, keeping a loop alive.
- :mod:`core.directory`, :mod:`core.fleetconfig` and :mod:`core.compacted`: following the workers topic, the
  config topic and the other compacted topics, for the API and the worker alike.
- :mod:`core.inventory` and :mod:`core.silences`: the cameras' inventory and the acknowledgements and silences
  people set, as pure state that the API, the worker and the incidents processor each keep.

``streams`` (the worker and gateway), ``store``, ``api`` and ``models`` depend on it; the command line
(:mod:`cli`) sits on top of them all.
"""
