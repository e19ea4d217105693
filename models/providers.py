"""The options each GPU execution provider is opened with: pure, so that what a session is asked for is tested
without a GPU.

ONNX Runtime takes a provider either by name or as ``(name, {option: value})``; the options are strings. Only the
TensorRT and CUDA providers get options, and only when they are in the list asked for (:func:`models.registry.
resolve_providers` keeps those this build of ONNX Runtime offers): a CPU machine opens exactly the session it
opened before. The option names are ONNX Runtime's (its TensorRT and CUDA execution provider pages):

- TensorRT: ``device_id``; ``trt_fp16_enable`` (FP16 kernels where TensorRT finds them faster, an option since
  FP16 moves scores a little); ``trt_engine_cache_enable`` and ``trt_engine_cache_path`` (built engines saved
  in a folder and reused by the next session of the same model, shapes and options, so a restart does not
  build again: minutes for a large model), with ``trt_timing_cache_enable`` and ``trt_timing_cache_path`` in
  the same folder (layer timings reused when an engine must be built again); ``trt_profile_min_shapes``,
  ``trt_profile_opt_shapes`` and ``trt_profile_max_shapes`` for a model whose batch size is free (``N`` in its
  manifest): one engine for every batch from 1 to the worker's largest, built once, rather than one per batch
  size met.
- CUDA (also where TensorRT leaves a node to it): ``device_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class GpuOptions:
    """What the settings say of the GPU providers (``CVOPS_GPU_DEVICE``, ``CVOPS_TRT_FP16``,
    ``CVOPS_TRT_ENGINE_CACHE``, ``CVOPS_BATCH_MAX_SIZE``)."""

    device_id: int = 0
    trt_fp16: bool = False
    trt_engine_cache: str = ""  # folder for built engines and layer timings; empty: none kept
    max_batch: int = 1  # the largest batch the worker infers: the top of the shape profile


def profile_shapes(input_name: str, shape: Sequence, max_batch: int) -> dict[str, str]:
    """TensorRT's shape profile for an input ``[N, C, H, W]`` whose batch size is free: batches 1 to
    ``max_batch``, tuned for ``max_batch``; none when the manifest fixes the batch size.

    >>> profile_shapes("images", ["N", 3, 416, 416], 8)["trt_profile_max_shapes"]
    'images:8x3x416x416'
    >>> profile_shapes("images", [1, 3, 416, 416], 8)
    {}
    """
    if isinstance(shape[0], int):
        return {}
    rest = "x".join(str(int(d)) for d in shape[1:])
    return {
        "trt_profile_min_shapes": f"{input_name}:1x{rest}",
        "trt_profile_opt_shapes": f"{input_name}:{max_batch}x{rest}",
        "trt_profile_max_shapes": f"{input_name}:{max_batch}x{rest}",
    }


def with_options(
    providers: Sequence[str], options: GpuOptions, input_name: str = "", input_shape: Sequence = ()
) -> list[str | tuple[str, dict[str, str]]]:
    """``providers`` as ONNX Runtime's ``InferenceSession`` takes them: TensorRT and CUDA with their options,
    the others (CPU) by name as before.

    >>> with_options(["CPUExecutionProvider"], GpuOptions(trt_fp16=True))
    ['CPUExecutionProvider']
    >>> with_options([CUDA, "CPUExecutionProvider"], GpuOptions(device_id=1))
    [('CUDAExecutionProvider', {'device_id': '1'}), 'CPUExecutionProvider']
    """
    out: list[str | tuple[str, dict[str, str]]] = []
    for name in providers:
        if name == TENSORRT:
            out.append((name, tensorrt_options(options, input_name, input_shape)))
        elif name == CUDA:
            out.append((name, {"device_id": str(options.device_id)}))
        else:
            out.append(name)
    return out


def tensorrt_options(options: GpuOptions, input_name: str, input_shape: Sequence) -> dict[str, str]:
    """The TensorRT provider's options (strings, as ONNX Runtime parses them)."""
    out = {"device_id": str(options.device_id), "trt_fp16_enable": "True" if options.trt_fp16 else "False"}
    if options.trt_engine_cache:
        out |= {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": options.trt_engine_cache,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": options.trt_engine_cache,
        }
    if input_name and len(input_shape) == 4:
        out |= profile_shapes(input_name, input_shape, max(1, options.max_batch))
    return out
