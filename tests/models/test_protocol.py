"""Every model in the registry lives the life models/protocol.py states, and gives what it gave before.

EXPECTED was recorded from the code before the protocol existed (NanoDet and the classifier each with their own
pre-processing, inference and post-processing), on one frame of the street footage and a photo of a cat,
with one thread: the families moved onto one base must still give it. YOLOv4-tiny's was recorded when it joined
the registry (its boxes checked against OpenCV's own Darknet importer by models/convert_yolov4_tiny.sh).
"""

from __future__ import annotations

import inspect
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

import models.base
import models.protocol
import models.yolo
from models import Model, discover, load
from models.base import OnnxModel
from models.classifier import Classification
from models.nanodet import Detection

REFS = [spec.ref for spec in discover("")]

# ref -> per frame: detections (label, class id, score, box) or (top-5 (label, class id, probability),
# embedding norm, its first six values)
EXPECTED = {
    "nanodet-m@1.0.0": [
        [
            ("person", 0, 0.5809, (159.91, 2.75, 497.12, 272.0)),
            ("person", 0, 0.35302, (0.0, 102.4, 123.22, 272.0)),
        ],
        [
            ("person", 0, 0.58838, (2.4, 0.96, 451.0, 300.0)),
            ("cat", 15, 0.40107, (0.35, 0.0, 448.99, 297.44)),
            ("dog", 16, 0.39805, (0.47, 0.34, 444.84, 300.0)),
            ("cell phone", 67, 0.3559, (294.65, 111.09, 343.83, 163.88)),
        ],
    ],
    "yolov4-tiny@1.0.0": [
        [
            ("car", 2, 0.29549, (58.1, 87.38, 183.31, 223.83)),
            ("person", 0, 0.26902, (122.8, 0.0, 425.47, 243.29)),
            ("car", 2, 0.26654, (2.79, 82.41, 119.45, 272.0)),
        ],
        [
            ("cat", 15, 0.36757, (19.7, 0.0, 430.64, 269.9)),
            ("dog", 16, 0.32801, (0.0, 4.05, 402.58, 297.92)),
        ],
    ],
    "efficientnet-lite0@1.0.0": [
        (
            [("suit", 834, 0.76692), ("Windsor tie", 906, 0.09355), ("limousine", 627, 0.01434),
             ("bulletproof vest", 465, 0.00844), ("Loafer", 630, 0.00519)],
            15.185,
            [0.55108, 0.0, 0.0, 0.01586, 0.0, 0.0],
        ),
        (
            [("tiger cat", 282, 0.39228), ("Egyptian cat", 285, 0.36304), ("tabby", 281, 0.16251),
             ("lynx", 287, 0.01785), ("window screen", 904, 0.00123)],
            15.5718,
            [0.08737, 0.05957, 0.0, 0.40864, 1.74918, 0.27248],
        ),
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def frames(street_frames) -> list[np.ndarray]:
    """Two frames of different sizes: the street (640x272, two people) and a photo of a cat (451x300)."""
    return [street_frames[31], cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR)]


@pytest.fixture(scope="module", params=REFS)
def model(request) -> Model:
    return load(request.param, extra_dirs="", intra_op_threads=1)


def test_the_registry_holds_both_families():
    assert {spec.task for spec in discover("")} == {"detection", "classification"}
    assert set(REFS) == set(EXPECTED), "a model without a recorded expectation: add it to EXPECTED"


def test_every_model_offers_the_whole_protocol_with_its_signatures(model):
    assert isinstance(model, Model) and isinstance(model, OnnxModel)
    assert model.task == next(s.task for s in discover("") if s.ref == f"{model.name}@{model.version}")
    assert model.providers == ["CPUExecutionProvider"] and len(model.labels) > 1
    for name, declared in inspect.getmembers(Model, inspect.isfunction):
        if name.startswith("_"):
            continue
        params = list(inspect.signature(declared).parameters)[1:]
        offered = inspect.signature(getattr(model, name)).parameters
        assert list(offered)[: len(params)] == params, f"{name}{tuple(offered)} is not {name}{tuple(params)}"
        assert all(p.default is not inspect.Parameter.empty for p in list(offered.values())[len(params) :])


def check(ref: str, results: list) -> None:
    """``results`` on :func:`frames` are the ones recorded before the protocol (scores within 1e-3, boxes
    within a pixel, embeddings within 1e-3)."""
    assert len(results) == 2
    for got, want in zip(results, EXPECTED[ref], strict=True):
        if isinstance(got, list):  # a detector's
            assert all(isinstance(d, Detection) for d in got)
            assert [(d.label, d.class_id) for d in got] == [(w[0], w[1]) for w in want]
            assert np.allclose([d.score for d in got], [w[2] for w in want], atol=1e-3)
            assert np.allclose([d.box for d in got], [w[3] for w in want], atol=1.0)
        else:
            assert isinstance(got, Classification)
            top, norm, head = want
            assert [(label, c) for label, c, _ in got.top] == [(label, c) for label, c, _ in top]
            assert np.allclose([p for *_, p in got.top], [p for *_, p in top], atol=1e-3)
            assert np.linalg.norm(got.embedding) == pytest.approx(norm, abs=1e-2)
            assert np.allclose(got.embedding[:6], head, atol=1e-3)


def test_a_batch_of_two_frames_end_to_end_gives_what_it_gave_before(model, frames):
    ref = f"{model.name}@{model.version}"
    sizes = [f.shape[:2] for f in frames]
    batch = model.new_batch(len(frames))
    fill = [threading.Thread(target=model.preprocess_into, args=pair) for pair in zip(frames, batch, strict=True)]
    for t in fill:  # slots are filled by threads of their own, as the worker's decode threads do
        t.start()
    for t in fill:
        t.join()
    assert np.array_equal(batch, model.preprocess(frames))
    check(ref, model.postprocess(model.infer(batch), sizes))
    inferred = model.submit(batch).result(timeout=120)
    assert inferred.seconds > 0
    check(ref, model.postprocess(inferred.outputs, sizes))
    check(ref, model.predict(frames))
    assert model.predict([]) == []


@pytest.mark.parametrize("ref", REFS)
def test_submit_on_lanes_gives_the_outputs_infer_gives(ref, frames):
    """On lanes the session's outputs come back from the lane threads; they reach the caller as
    :meth:`infer` gives them (the classifier's by role)."""
    model = load(ref, extra_dirs="", lanes=2)
    assert model.lanes == 2
    batch = model.preprocess(frames)
    direct, submitted = model.infer(batch), model.submit(batch).result(timeout=120).outputs
    assert type(submitted) is type(direct)
    arrays = (direct, submitted)
    if isinstance(direct, dict):
        assert list(submitted) == list(direct)
        arrays = (direct.values(), submitted.values())
    for a, b in zip(*arrays, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    check(ref, model.postprocess(submitted, [f.shape[:2] for f in frames]))
    with pytest.raises(ValueError, match="image 1: expected HxWx3"):
        model.preprocess([frames[0], frames[0][:, :, 0]])


@pytest.mark.parametrize("module", [models.protocol, models.base, models.yolo])
def test_the_examples_in_the_docstrings_run(module, capsys):
    example = re.search(r"::\n\n((?:    .*\n|\n)+)", module.__doc__).group(1)
    exec(compile(inspect.cleandoc(example), str(Path(module.__file__)), "exec"), {})
    assert capsys.readouterr().out.strip()
