"""The GPU providers' options (models/providers.py): pure logic, checked without a GPU; and on this CPU machine a
model opened with them opens the session it opened before."""

from __future__ import annotations

from core.settings import Settings
from models import load_detector
from models.providers import CUDA, TENSORRT, GpuOptions, with_options
from streams.worker import gpu_options

CPU = "CPUExecutionProvider"
SHAPE = ["N", 3, 416, 416]


def test_a_cpu_session_is_asked_for_by_name_alone_whatever_the_gpu_options():
    options = GpuOptions(device_id=3, trt_fp16=True, trt_engine_cache="/somewhere", max_batch=8)
    assert with_options([CPU], options, "images", SHAPE) == [CPU]


def test_tensorrt_gets_fp16_its_engine_cache_and_a_shape_profile_up_to_the_largest_batch():
    options = GpuOptions(device_id=1, trt_fp16=True, trt_engine_cache="cache/trt", max_batch=8)
    requested = with_options([TENSORRT, CUDA, CPU], options, "images", SHAPE)
    assert requested[1:] == [(CUDA, {"device_id": "1"}), CPU]
    name, trt = requested[0]
    assert name == TENSORRT
    assert trt == {
        "device_id": "1",
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "cache/trt",
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": "cache/trt",
        "trt_profile_min_shapes": "images:1x3x416x416",
        "trt_profile_opt_shapes": "images:8x3x416x416",
        "trt_profile_max_shapes": "images:8x3x416x416",
    }


def test_fp16_off_no_cache_and_a_fixed_batch_ask_for_none_of_those():
    trt = with_options([TENSORRT], GpuOptions(), "images", [4, 3, 224, 224])[0][1]
    assert trt == {"device_id": "0", "trt_fp16_enable": "False"}


def test_the_settings_give_the_options_once():
    s = Settings(_env_file=None, gpu_device=2, trt_fp16=True, trt_engine_cache="", batch_max_size=16)
    assert gpu_options(s) == GpuOptions(device_id=2, trt_fp16=True, trt_engine_cache="", max_batch=16)
    default = gpu_options(Settings(_env_file=None))
    assert (default.trt_fp16, default.trt_engine_cache, default.max_batch) == (False, ".cvops/trt-engines", 8)


def test_on_a_cpu_build_the_options_change_nothing_and_make_no_cache_folder(tmp_path):
    cache = tmp_path / "engines"
    model = load_detector("nanodet-m", intra_op_threads=1, gpu=GpuOptions(trt_fp16=True, trt_engine_cache=str(cache)))
    assert model.providers == [CPU]
    assert not cache.exists()
