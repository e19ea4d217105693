"""The clean-corpus benchmark (load-tests/clean_corpus.py) on a slice: the shape of its report, its bound,
and that a run is reproducible (seeded) and read back from its cache."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus():
    """load-tests/clean_corpus.py, imported by path (its folder is not a package)."""
    spec = importlib.util.spec_from_file_location("cvops_bench_clean_corpus", ROOT / "load-tests" / "clean_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_upper_bound_is_exact(corpus):
    assert corpus.upper_95(0, 150_000) * 1e4 == pytest.approx(0.2, abs=0.001)  # the rule of three
    assert corpus.upper_95(0, 149_000) * 1e4 > 0.2  # fewer frames cannot show the target
    assert corpus.upper_95(5, 10_000) > corpus.upper_95(4, 10_000) > 4 / 10_000


def test_plan_covers_every_kind_of_camera(corpus):
    cams = corpus.plan(corpus.CAMERAS, corpus.FRAMES, corpus.SCENES)
    assert sum(c.frames for c in cams) >= 150_000
    assert {c.scene.kind for c in cams} == {"street", "still", "vehicle", "handheld"}
    assert all(c.scene.motion_check == (c.scene.kind == "still") for c in cams)
    assert any(c.steady_quality for c in cams) and not all(c.steady_quality for c in cams)
    assert any(c.light_amplitude for c in cams) and not all(c.light_amplitude for c in cams)


def test_a_slice_is_scored_per_detector_and_reproducible(corpus, tmp_path):
    settings = Settings(_env_file=None)
    args = dict(cameras=2, frames=150, scenes=["still-chelsea"], settings=settings, cache_dir=tmp_path)
    first = corpus.run(**args)
    assert first["measure_s"] > 0  # measured now and cached
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.startswith("still-chelsea-") for f in files)

    again = corpus.run(**args)
    assert again["measure_s"] == 0  # read back from the cache
    volatile = ("measure_s", "replay_ms_per_frame", "wall_s")
    assert {k: v for k, v in again.items() if k not in volatile} == {
        k: v for k, v in first.items() if k not in volatile
    }

    assert (first["cameras"], first["frames"]) == (2, 300)
    assert first["variants"] == 24 * len(corpus.LEVELS) * corpus.JITTERS
    rows = first["detectors"]
    for key in ("prediction_drift:class_mix", "data_drift:blur_distribution", "domain_drift:camera_moved"):
        assert key in rows
    for key, r in rows.items():
        assert set(r) == {"false_alarms", "frames", "tested", "per_10k", "upper_95_per_10k"}, key
        assert r["frames"] == 300 and 0 <= r["tested"] <= 300, key
        if r["tested"]:
            assert r["upper_95_per_10k"] > r["per_10k"] >= 0, key
        else:  # no rate on no frames
            assert r["per_10k"] is None and r["upper_95_per_10k"] is None, key
    # the range rule watches every frame; the distribution tests (a 600-frame reference) tested none of 150
    assert rows["data_drift:brightness"]["tested"] == 300 and rows["data_drift:blur_distribution"]["tested"] == 0
    assert first["false_alarms"] == sum(r["false_alarms"] for r in rows.values()) == len(first["alarms"])
    assert first["target_met"] is False  # 300 frames bound nothing near 0.2 per 10,000

    out = io.StringIO()
    corpus.report(first, out)
    text = out.getvalue()
    assert "prediction_drift:class_mix" in text and "upper_95_per_10k" in text and "target clean_corpus" in text
    line = json.dumps(corpus.summary(first))
    assert "alarms" not in json.loads(line) and json.loads(line)["frames"] == 300
