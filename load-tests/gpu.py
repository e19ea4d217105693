"""Bare ONNX Runtime benchmark of the zoo's models per execution provider and batch size (GPU or CPU).

    python load-tests/gpu.py                       # TensorRT, CUDA, CPU; batches 1..64 (what gpu.sh runs)
    python load-tests/gpu.py --providers CPUExecutionProvider --batches 1,8 --seconds 2

For each model (NanoDet-m, EfficientNet-Lite0), provider and batch size: one session, warm-up runs, then
timed runs of the session alone on device-resident inputs. CUDA and TensorRT use IO binding: the input is an
OrtValue on the GPU and every output is bound to the GPU, so the figure is the model's own ceiling with no
host copies; a second figure (``copy_ms``) times plain ``session.run`` on numpy arrays, host-to-device and
back included. The providers really in use are read from ``session.get_providers()``: onnxruntime-gpu
lists CUDA and TensorRT even where their libraries are missing, and a session then silently falls back
to the CPU; such a provider is skipped with a note, never reported as GPU figures.

Each GPU configuration is checked against the CPU provider on the same input (``max_abs_diff``).
Inputs are seeded random tensors in the models' normalised range (never zeros), not decoded frames: this
measures the model, not decoding. Only numpy and onnxruntime are needed (runs under the GPU image's
python3 without the project's dependencies).

Prints a table, then one JSON line; writes ``load-tests/results/gpu-<card>.json`` under ``$OUT`` when set,
else under this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "nanodet-m": ROOT / "models" / "zoo" / "nanodet-m" / "nanodet-m.onnx",
    "efficientnet-lite0": ROOT / "models" / "zoo" / "efficientnet-lite0" / "efficientnet-lite0.onnx",
}
SHORT = {"TensorrtExecutionProvider": "TensorRT", "CUDAExecutionProvider": "CUDA", "CPUExecutionProvider": "CPU"}
LONG = {v.lower(): k for k, v in SHORT.items()}


def provider_name(text: str) -> str:
    text = text.strip()
    return text.lower() if text.lower().startswith("torch") else LONG.get(text.lower(), text)


def gpu_info() -> dict:
    """GPU name and memory from nvidia-smi, or the CPU's model when there is no GPU."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
            if out:
                name, memory, driver = (v.strip() for v in out.splitlines()[0].split(",", 2))
                return {"gpu": name, "gpu_memory": memory, "driver": driver, "gpus": len(out.splitlines())}
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"gpu": None, "cpu": cpu, "cpus": os.cpu_count()}


def card_slug(info: dict) -> str:
    return re.sub(r"[^a-z0-9]+", "-", (info.get("gpu") or "cpu").lower()).strip("-") or "cpu"


def make_session(ort, path: Path, provider: str, args, cache: Path):
    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    if provider == "TensorrtExecutionProvider":
        probe = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name, shape = probe.get_inputs()[0].name, probe.get_inputs()[0].shape
        dims = "x".join(str(d) for d in shape[1:])
        lo, hi = min(args.batches), max(args.batches)
        opt = 8 if lo <= 8 <= hi else hi
        trt = {
            "trt_fp16_enable": bool(args.trt_fp16),
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            # One engine for every batch size (otherwise each new shape rebuilds the engine mid-run).
            "trt_profile_min_shapes": f"{name}:{lo}x{dims}",
            "trt_profile_max_shapes": f"{name}:{hi}x{dims}",
            "trt_profile_opt_shapes": f"{name}:{opt}x{dims}",
        }
        providers = [(provider, trt), "CUDAExecutionProvider", "CPUExecutionProvider"]
    elif provider == "CUDAExecutionProvider":
        providers = [(provider, {"device_id": 0}), "CPUExecutionProvider"]
    else:
        providers = [provider]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def input_batch(session, batch: int, seed: int) -> tuple[str, np.ndarray]:
    inp = session.get_inputs()[0]
    shape = [batch, *(d if isinstance(d, int) else 1 for d in inp.shape[1:])]
    rng = np.random.default_rng(seed)
    return inp.name, rng.uniform(-2.0, 2.0, size=shape).astype(np.float32)


def time_runs(fn, seconds: float, warmup: int, min_runs: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10_000:
            break
    return times


def bench_config(ort, session, provider: str, batch: int, args) -> dict:
    name, x = input_batch(session, batch, seed=batch)
    outputs = [o.name for o in session.get_outputs()]
    row: dict = {}
    if provider == "CPUExecutionProvider":
        times = time_runs(lambda: session.run(outputs, {name: x}), args.seconds, args.warmup)
    else:
        # IO binding: the input lives on the GPU, outputs are allocated there by ORT; nothing crosses PCIe.
        binding = session.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for o in outputs:
            binding.bind_output(o, "cuda", 0)
        binding.synchronize_inputs()

        def run() -> None:
            session.run_with_iobinding(binding)  # the CUDA EP synchronises its stream at the end of a run

        times = time_runs(run, args.seconds, args.warmup)
        binding.synchronize_outputs()
        if args.copies:
            copy = time_runs(lambda: session.run(outputs, {name: x}), max(0.3, args.seconds / 3), 2)
            row["copy_ms"] = round(1e3 * float(np.median(copy)), 3)
    med = float(np.median(times))
    row.update(
        batch=batch,
        runs=len(times),
        ms=round(1e3 * med, 3),
        p90_ms=round(1e3 * float(np.percentile(times, 90)), 3),
        fps=round(batch / med, 1),
    )
    return row


def check_against_cpu(ort, session, path: Path, batch: int = 2) -> float:
    """Largest absolute difference of the first output between this session and a CPU session."""
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name, x = input_batch(ref, batch, seed=12345)
    first = ref.get_outputs()[0].name
    want = ref.run([first], {name: x})[0]
    got = session.run([first], {name: x})[0]
    return float(np.max(np.abs(got.astype(np.float64) - want)))


TORCH = ("torch", "torch-fp16")  # pseudo-providers: the same ONNX graphs run by PyTorch through onnx2torch


def torch_model(path: Path, half: bool):
    """(module, device) for an ONNX file converted by onnx2torch; raises ImportError without torch/onnx2torch."""
    import onnx2torch
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = onnx2torch.convert(str(path)).eval().to(device)
    if half:
        module = module.half()
    return module, device


def bench_torch(module, device: str, half: bool, batch: int, args, probe) -> dict:
    import torch

    _, x = input_batch(probe, batch, seed=batch)
    t = torch.from_numpy(x).to(device)
    if half:
        t = t.half()

    def run() -> None:
        with torch.inference_mode():
            module(t)
        if device == "cuda":
            torch.cuda.synchronize()

    times = time_runs(run, args.seconds, args.warmup)
    med = float(np.median(times))
    return {
        "batch": batch,
        "runs": len(times),
        "ms": round(1e3 * med, 3),
        "p90_ms": round(1e3 * float(np.percentile(times, 90)), 3),
        "fps": round(batch / med, 1),
    }


def check_torch(ort, module, device: str, half: bool, path: Path, batch: int = 2) -> float:
    import torch

    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name, x = input_batch(ref, batch, seed=12345)
    want = ref.run([ref.get_outputs()[0].name], {name: x})[0]
    t = torch.from_numpy(x).to(device)
    with torch.inference_mode():
        got = module(t.half() if half else t)
    got = got[0] if isinstance(got, list | tuple) else got
    return float(np.max(np.abs(got.float().cpu().numpy().astype(np.float64) - want)))


def run_torch(ort, model: str, path: Path, half: bool, entry: dict, args, t_start: float) -> None:
    """Fill ``entry`` with the onnx2torch figures of one model (fp32 or fp16)."""
    try:
        module, device = torch_model(path, half)
    except ImportError as e:
        entry["skipped"] = f"torch backend unavailable: {e}"
        return
    import torch

    entry["providers_in_use"] = [f"torch {torch.__version__} on {device}" + (" fp16" if half else "")]
    entry["max_abs_diff_vs_cpu"] = round(check_torch(ort, module, device, half, path), 6)
    probe = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in args.batches:
        if time.monotonic() - t_start > args.budget_s:
            entry["truncated"] = f"time budget of {args.budget_s:.0f} s spent before batch {batch}"
            break
        row = bench_torch(module, device, half, batch, args, probe)
        entry["rows"].append(row)
        print(f"  {model:<19} {entry['provider']:<10} b{batch:<3} {row['ms']:9.3f} ms {row['fps']:9.1f} fps",
              file=sys.stderr)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--providers", default="TensorRT,CUDA,CPU", help="comma-separated, short or full names")
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per configuration (at least 5 runs)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs per configuration")
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = ORT's default)")
    ap.add_argument("--trt-fp16", action="store_true", help="let TensorRT use fp16 kernels")
    ap.add_argument("--no-copies", dest="copies", action="store_false", help="skip the session.run copy figure")
    ap.add_argument("--budget-s", type=float, default=200.0, help="stop starting configurations after this long")
    ap.add_argument("--out", default=None, help="JSON file (default: $OUT/load-tests/results/gpu-<card>.json)")
    args = ap.parse_args()
    args.batches = sorted({int(b) for b in args.batches.split(",") if b.strip()})
    providers = [provider_name(p) for p in args.providers.split(",") if p.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}")

    t_start = time.monotonic()
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # missing CUDA/TensorRT libraries are reported below, not as native noise
    available = ort.get_available_providers()
    notes: list[str] = []
    preloaded = None
    wants_gpu = any(p not in ("CPUExecutionProvider", *TORCH) for p in providers)
    gpu_build = any(p in available for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
    if wants_gpu and gpu_build and hasattr(ort, "preload_dlls"):
        try:  # CUDA/cuDNN from the nvidia-* wheels beside onnxruntime, before any session needs them
            ort.preload_dlls()
            preloaded = True
        except Exception as e:  # report, then let the session fall back
            preloaded = False
            notes.append(f"preload_dlls failed: {e}")
    info = gpu_info()
    cache = Path(os.environ.get("CVOPS_TRT_CACHE", "/tmp/cvops-trt-cache"))
    cache.mkdir(parents=True, exist_ok=True)
    print(
        f"onnxruntime {ort.__version__} ({ort.get_device()}); available {available}; "
        f"device {info.get('gpu') or info.get('cpu')}",
        file=sys.stderr,
    )

    results: list[dict] = []
    for model in models:
        path = MODELS[model]
        for provider in providers:
            entry = {"model": model, "provider": SHORT.get(provider, provider), "rows": []}
            results.append(entry)
            if provider in TORCH:
                if time.monotonic() - t_start > args.budget_s:
                    entry["skipped"] = f"time budget of {args.budget_s:.0f} s spent"
                    continue
                t0 = time.monotonic()
                try:
                    run_torch(ort, model, path, provider == "torch-fp16", entry, args, t_start)
                except Exception as e:  # e.g. out of memory at a large batch: keep what ran
                    entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                entry["session_s"] = round(time.monotonic() - t0, 1)
                continue
            if provider not in available:
                entry["skipped"] = f"{provider} is not in this onnxruntime build ({ort.__version__})"
                continue
            if time.monotonic() - t_start > args.budget_s:
                entry["skipped"] = f"time budget of {args.budget_s:.0f} s spent"
                continue
            t0 = time.monotonic()
            try:
                session = make_session(ort, path, provider, args, cache)
            except Exception as e:
                entry["skipped"] = f"session failed: {str(e).splitlines()[0][:300]}"
                continue
            in_use = session.get_providers()
            entry["providers_in_use"] = in_use
            if in_use[0] != provider:
                entry["skipped"] = f"{provider} did not load (libraries missing?); the session fell back to {in_use[0]}"
                continue
            try:
                if provider != "CPUExecutionProvider":
                    entry["max_abs_diff_vs_cpu"] = round(check_against_cpu(ort, session, path), 6)
                for batch in args.batches:
                    if time.monotonic() - t_start > args.budget_s:
                        entry["truncated"] = f"time budget of {args.budget_s:.0f} s spent after batch {batch}"
                        break
                    row = bench_config(ort, session, provider, batch, args)
                    entry["rows"].append(row)
                    print(f"  {model:<19} {entry['provider']:<10} b{batch:<3} {row['ms']:9.3f} ms "
                          f"{row['fps']:9.1f} fps", file=sys.stderr)  # fmt: skip
            except Exception as e:
                entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            entry["session_s"] = round(time.monotonic() - t0, 1)
            del session

    # Table, then one JSON line.
    print(f"\n{'model':<19} {'provider':<10} {'batch':>5} {'ms/batch':>10} {'fps':>10} {'copy ms':>9}")
    for entry in results:
        if entry.get("skipped"):
            print(f"{entry['model']:<19} {entry['provider']:<10}  skipped: {entry['skipped']}")
            continue
        for row in entry["rows"]:
            copy = f"{row['copy_ms']:9.3f}" if "copy_ms" in row else f"{'-':>9}"
            print(f"{entry['model']:<19} {entry['provider']:<10} {row['batch']:>5} {row['ms']:>10.3f} "
                  f"{row['fps']:>10.1f} {copy}")  # fmt: skip
        for key in ("error", "truncated"):
            if entry.get(key):
                print(f"{entry['model']:<19} {entry['provider']:<10}  {key}: {entry[key]}")
    summary = {
        "benchmark": "gpu",
        **info,
        "onnxruntime": ort.__version__,
        "available_providers": available,
        "preload_dlls": preloaded,
        "io_binding": True,
        "trt_fp16": bool(args.trt_fp16),
        "seconds_per_config": args.seconds,
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "notes": notes,
        "results": results,
    }
    line = json.dumps(summary)
    print(line)
    out = Path(args.out) if args.out else None
    if out is None:
        base = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT
        out = base / "load-tests" / "results" / f"gpu-{card_slug(info)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
