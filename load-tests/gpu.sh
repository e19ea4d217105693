#!/usr/bin/env bash
# GPU benchmark of the zoo's models on ONNX Runtime (TensorRT, CUDA, CPU; batches 1..64): load-tests/gpu.py.
#
#   load-tests/gpu.sh --prepare [--split]    HERE (with network): check whether onnxruntime-gpu can travel to
#                                            the GPU machine; --split downloads it and cuts it into parts
#   load-tests/gpu.sh [gpu.py options]       ON THE GPU MACHINE (no network): install onnxruntime-gpu into a
#                                            fresh environment, run gpu.py, results under $OUT
#   load-tests/gpu.sh --processor [opts]     the same, then load-tests/processor.py (the worker's decode,
#                                            batch, infer and monitor path) on CUDA
#
# Why --prepare exists. The GPU machine reaches no registry; its image has python3 3.12 with CUDA 13 wheels
# (nvidia-cublas, -cuda-runtime, -cudnn-cu13, -cufft, -curand, -nvjitlink...) and onnxruntime 1.30 (CPU
# build), no TensorRT. onnxruntime-gpu 1.31.1 (cp312, built for CUDA 13) is a 244 MiB wheel, and
# onnxruntime-gpu[cuda,cudnn] 1.31.1 with its CUDA wheels is about 1.5 GiB. One remote command carries at most
# 64 MiB, working tree included (about 34 MiB here: the two ONNX models). So the wheel cannot travel in one
# call: --prepare says so and stops. --split cuts the wheel into parts that fit beside the tree, one part
# per call (ignored files left on a warm machine are kept between calls); the call that brings the last
# part reassembles it (sha256 checked) and runs the benchmark. Without the wheel on the machine this script
# fails with exit 3 and a clear message (after a CPU-only run on the image's onnxruntime unless
# --no-cpu-fallback), never with GPU figures that are really CPU ones.
#
# The one-call route that does work: --prepare also downloads onnx2torch (a 100 KB pure-Python wheel) into
# .whl/; the image's PyTorch then runs the SAME ONNX graphs on the GPU (gpu.py providers torch, torch-fp16;
# outputs checked against ONNX Runtime CPU). Those are PyTorch-eager figures, labelled so, not ORT's.
set -uo pipefail
cd "$(dirname "$0")/.."
ORT_VERSION=1.31.1
ONNX2TORCH_VERSION=1.5.15
WHL=.whl                           # ignored folder of small wheels carried along in one command
PARTS=${CVOPS_ORTGPU_PARTS:-.ortgpu}  # ignored folder (.git/info/exclude) that is carried part by part
CARRY_LIMIT_MIB=64
PY=${PYTHON:-python3}
say() { printf '[gpu.sh] %s\n' "$*" >&2; }

wheel_platform=(--only-binary=:all: --python-version 3.12 --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

tree_mib() {  # what every remote command sends anyway: tracked + untracked-not-ignored files
  git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 |
    awk '{printf "%d", $1 / 1048576 + 1}'
}

prepare() {
  local split=0
  [[ "${1:-}" == "--split" ]] && split=1
  local report tree room
  for ignored in "$WHL" "$PARTS"; do  # else every call would send them as untracked files, over the limit
    grep -qxF "/$ignored/" .git/info/exclude 2>/dev/null || echo "/$ignored/" >> .git/info/exclude
  done
  mkdir -p "$WHL"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHL" "onnx2torch==$ONNX2TORCH_VERSION" ||
    say "could not download onnx2torch (the torch route needs it)"
  say "prepared $(ls "$WHL"/onnx2torch-*.whl 2>/dev/null) for the torch route: run carry=[\"$WHL\"] command='bash load-tests/gpu.sh'"
  report=$(mktemp)
  say "resolving onnxruntime-gpu[cuda,cudnn]==$ORT_VERSION for the GPU image (cp312, manylinux x86-64)"
  if ! "$PY" -m pip install --dry-run --quiet --ignore-installed --report "$report" --target "$(mktemp -d)" \
      "${wheel_platform[@]}" "onnxruntime-gpu[cuda,cudnn]==$ORT_VERSION" 2>/dev/null; then
    say "pip could not resolve onnxruntime-gpu==$ORT_VERSION (no network to PyPI?)"; exit 2
  fi
  tree=$(tree_mib)
  room=$((CARRY_LIMIT_MIB - tree - 2))
  "$PY" - "$report" "$tree" "$room" <<'EOF'
import json, sys, urllib.request
report, tree, room = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
total = ort = 0
for item in json.load(open(report))["install"]:
    url = item["download_info"]["url"]
    try:
        size = int(urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30).headers["Content-Length"])
    except Exception:
        size = 0
    total += size
    if "onnxruntime_gpu" in url:
        ort = size
    print(f"  {size / 2**20:8.1f} MiB  {url.rsplit('/', 1)[1]}", file=sys.stderr)
print(f"[gpu.sh] onnxruntime-gpu[cuda,cudnn]: {total / 2**20:.0f} MiB in all; onnxruntime-gpu alone {ort / 2**20:.0f} MiB "
      f"(the GPU image already has CUDA 13 and cuDNN wheels). A run call carries 64 MiB, the working tree takes "
      f"{tree} MiB: room for {room} MiB.", file=sys.stderr)
sys.exit(0 if ort and ort / 2**20 <= room else 1)
EOF
  local fits=$?
  rm -f "$report"
  if [[ $fits == 0 ]]; then
    say "the wheel fits in one call"
  elif [[ $split == 0 ]]; then
    say "CANNOT CARRY: onnxruntime-gpu does not fit in one run call, and the GPU machine has no network."
    say "Options: (1) load-tests/gpu.sh --prepare --split, which prints one run call per part (each within the warm machine's 30 s idle release);"
    say "(2) an image with onnxruntime-gpu; (3) ask for a larger carry limit. onnxruntime-gpu was not downloaded."
    say "Meanwhile the torch route runs in one call: run carry=[\"$WHL\"] timeout_s=420 command='bash load-tests/gpu.sh'"
    exit 3
  fi
  mkdir -p "$PARTS"
  "$PY" -m pip download -q --no-deps "${wheel_platform[@]}" -d "$PARTS" "onnxruntime-gpu==$ORT_VERSION" || exit 2
  local whl
  whl=$(ls "$PARTS"/onnxruntime_gpu-"$ORT_VERSION"-*.whl | head -1)
  (cd "$PARTS" && rm -rf p?? && sha256sum "$(basename "$whl")" > wheel.sha256)
  if [[ $fits != 0 ]]; then
    local i=0 n
    n=$(( ( $(stat -c %s "$whl") + room * 1048576 - 1 ) / (room * 1048576) ))
    while read -r chunk; do
      i=$((i + 1)); mkdir -p "$PARTS/$(printf 'p%02d' "$i")"
      mv "$chunk" "$PARTS/$(printf 'p%02d' "$i")/"
      cp "$PARTS/wheel.sha256" "$PARTS/$(printf 'p%02d' "$i")/"
    done < <(cd "$PARTS" && split -b "${room}M" -d -a 2 "$(basename "$whl")" "part." && ls -1 "$PWD"/part.*)
    rm -f "$whl"
    say "cut into $n parts of <= $room MiB: $PARTS/p01 .. $PARTS/$(printf 'p%02d' "$n")"
    say "Then, back to back on one warm machine (each call within the machine's idle release):"
    for ((i = 1; i < n; i++)); do
      say "  run carry=[\"$PARTS/$(printf 'p%02d' "$i")\"] command='bash load-tests/gpu.sh --receive'"
    done
    say "  run carry=[\"$PARTS/$(printf 'p%02d' "$n")\"] timeout_s=420 command='bash load-tests/gpu.sh'"
  else
    say "run carry=[\"$PARTS\"] timeout_s=420 command='bash load-tests/gpu.sh'"
  fi
}

# On the GPU machine: a wheel carried whole, or parts carried call by call and joined here.
find_wheel() {
  local whl
  whl=$(ls "$PARTS"/onnxruntime_gpu-*.whl "$PARTS"/*/onnxruntime_gpu-*.whl 2>/dev/null | head -1)
  if [[ -n "$whl" ]]; then echo "$whl"; return 0; fi
  local sums
  sums=$(ls "$PARTS"/p*/wheel.sha256 2>/dev/null | head -1)
  [[ -n "$sums" ]] || return 1
  sums=$(readlink -f "$sums")
  local name
  name=$(awk '{print $2}' "$sums")
  local out=/tmp/ortgpu/$name
  mkdir -p /tmp/ortgpu
  cat "$PARTS"/p*/part.* > "$out" 2>/dev/null || return 1  # p01/part.00, p02/part.01...: glob order
  if (cd /tmp/ortgpu && sha256sum -c --quiet "$sums" >/dev/null 2>&1); then
    echo "$out"; return 0
  fi
  say "have parts: $(ls -d "$PARTS"/p* 2>/dev/null | xargs -n1 basename | tr '\n' ' ')(joined wheel fails its sha256: parts missing)"
  return 1
}

# A fresh venv that sees the image's packages (numpy, protobuf...), with onnxruntime-gpu in front of the
# image's CPU onnxruntime (both own the folder 'onnxruntime'; the venv's copy comes first on sys.path).
# preload_dlls() looks for the CUDA/cuDNN libraries in nvidia/ beside onnxruntime/: link the image's there.
install_wheel() {
  local whl=$1 site=$2 purelib img_site
  rm -rf "$site"
  "$PY" -m venv --system-site-packages --without-pip "$site" || return 1
  purelib=$("$site/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  img_site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$img_site" > "$purelib/zz-image-site.pth"  # python3 there is itself a venv (/opt/torch/.venv)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$purelib" "$whl" || return 1
  [[ -d "$img_site/nvidia" ]] && ln -sfn "$img_site/nvidia" "$purelib/nvidia"
  say "installed $(basename "$whl") into $site (CUDA libraries from $img_site/nvidia)"
}

main() {
  # The whole log comes back under $OUT even if the call is cut off at its limit.
  [[ -n "${OUT:-}" && -d "${OUT:-}" ]] && exec > >(tee -a "$OUT/gpu-sh.log") 2>&1
  if ls "$WHL"/*.whl >/dev/null 2>&1; then  # small carried wheels (onnx2torch): image's python3 + PYTHONPATH
    # flock: several runs started together (workers sharing the GPU) must not install over each other
    flock /tmp/cvops-site.lock "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/cvops-site "$WHL"/*.whl && export PYTHONPATH=/tmp/cvops-site${PYTHONPATH:+:$PYTHONPATH} ||
      say "could not install $WHL/*.whl"
  fi
  local fallback=1 args=()
  for a in "$@"; do [[ "$a" == "--no-cpu-fallback" ]] && fallback=0 || args+=("$a"); done
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || say "no nvidia-smi"
  local site=/tmp/cvops-ortgpu-venv
  has_cuda_ort() { "$1" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())' 2>/dev/null; }
  local py=$PY
  if has_cuda_ort "$py"; then
    say "$py already has a CUDA build of onnxruntime"
  elif [[ -x "$site/bin/python" ]] && has_cuda_ort "$site/bin/python"; then
    py=$site/bin/python  # installed by an earlier run on this machine: several runs may share it
  else
    local whl
    if whl=$(find_wheel) || { timeout 120 "$PY" -m pip download -q --retries 0 --timeout 5 --no-deps -d /tmp/ortgpu \
        "onnxruntime-gpu==$ORT_VERSION" >/dev/null 2>&1 && whl=$(ls /tmp/ortgpu/onnxruntime_gpu-*.whl | head -1); }; then
      flock /tmp/cvops-ortgpu.lock bash -c "$(declare -f install_wheel say); PY=$PY install_wheel '$whl' '$site'" || exit 2
      py=$site/bin/python
      if ! has_cuda_ort "$py"; then say "the installed onnxruntime-gpu offers no CUDA provider"; exit 2; fi
    else
      say "FAILED: onnxruntime-gpu==$ORT_VERSION is not on this machine: no CUDA build of onnxruntime in $PY,"
      say "no wheel or complete set of parts in $PARTS/, and no registry reachable. The wheel (244 MiB) is over"
      say "the 64 MiB a run call carries: on a machine with network run load-tests/gpu.sh --prepare (--split)."
      if [[ $fallback == 1 ]]; then
        say "fallback: the image's onnxruntime on CPU, and the same graphs in PyTorch (onnx2torch) on the GPU:"
        PYTHONUNBUFFERED=1 timeout 300 "$PY" load-tests/gpu.py --providers CPU,torch,torch-fp16 --budget-s 240 "${args[@]}"
      fi
      exit 3
    fi
  fi
  if [[ "${CVOPS_GPU_BENCH:-gpu}" == processor ]]; then
    PYTHONUNBUFFERED=1 timeout 280 "$py" load-tests/processor.py --video "${CVOPS_GPU_VIDEO:-$WHL/bikes.mp4}" \
      --providers CUDAExecutionProvider,CPUExecutionProvider "${args[@]}"
  else
    PYTHONUNBUFFERED=1 timeout 280 "$py" load-tests/gpu.py "${args[@]}"
  fi
}

case "${1:-}" in
  --prepare) shift; prepare "$@" ;;
  --processor)  # the worker's processing path (load-tests/processor.py) on CUDA instead of gpu.py; needs the
    # project's pure dependencies (pydantic, pydantic-settings...) and bikes.mp4 carried in .whl/
    shift; CVOPS_GPU_BENCH=processor main "$@" ;;
  --receive)  # a call that only brings a part: say what has arrived
    ls -d "$PARTS"/p* 2>/dev/null | xargs -rn1 basename | tr '\n' ' '; echo; find_wheel >/dev/null && say "wheel complete" ;;
  -h|--help) sed -n '2,20p' "$0" ;;
  *) main "$@" ;;
esac
