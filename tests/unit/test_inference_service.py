"""The serving core on real ONNX Runtime with the committed defect model."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edge.config.model import InferenceSettings
from edge.errors import BackendUnavailableError
from edge.inference.backends import create_backend
from edge.inference.engine_cache import EngineKey
from edge.inference.manifest import ModelManifest, Precision
from edge.inference.preprocess import to_tensor
from edge.inference.service import InferenceService
from models.defect.dataset import LABELS, make_dataset, make_image, normalise
from tests.support.models import SHIPPED_DEFECT_MODEL, copy_version, installed_registry


def make_service(
    tmp_path: Path, order: list[str] | None = None, **settings: Any
) -> InferenceService:
    return InferenceService(
        InferenceSettings(**settings),
        installed_registry(tmp_path / "m"),
        order or ["ort-cpu"],
        tmp_path / "engines",
    )  # type: ignore[arg-type]


def test_known_synthetic_defects_are_classified_correctly(tmp_path: Path) -> None:
    serving = make_service(tmp_path, precision="fp32")
    serving.start()
    rng = np.random.default_rng(123)
    for label in LABELS:
        for _ in range(10):
            assert serving.infer_pixels(make_image(label, rng)).label == label


def test_int8_accuracy_is_within_one_point_of_fp32() -> None:
    images, labels = make_dataset(600, seed=77)
    tensors = normalise(images)
    accuracy = {}
    for precision, file in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        session = ort.InferenceSession(
            str(SHIPPED_DEFECT_MODEL / file), providers=["CPUExecutionProvider"]
        )
        predicted = session.run(None, {"image": tensors})[0].argmax(axis=1)
        accuracy[precision] = float((predicted == labels).mean())
    assert accuracy["fp32"] >= 0.95
    assert accuracy["fp32"] - accuracy["int8"] <= 0.01


def test_auto_precision_measures_both_and_records_why(tmp_path: Path) -> None:
    served = make_service(tmp_path).start()
    assert set(served.precision_trials_ms) == {"fp32", "int8"}
    fastest = min(served.precision_trials_ms, key=served.precision_trials_ms.__getitem__)
    assert served.loaded.precision == fastest
    assert served.reference_deviation is not None


def test_preprocessing_matches_the_training_normalisation() -> None:
    from edge.inference.manifest import load_manifest

    manifest = load_manifest(SHIPPED_DEFECT_MODEL)
    images, _ = make_dataset(4, seed=5)
    ours = np.concatenate([to_tensor(image, manifest) for image in images])
    assert np.allclose(ours, normalise(images), atol=1e-6)
    rgb_big = np.repeat(np.kron(images[0], np.ones((2, 2), dtype=np.uint8))[:, :, None], 3, 2)
    assert to_tensor(rgb_big, manifest).shape == (1, 1, 64, 64)  # converted and resized


def test_hot_reload_under_load_fails_no_request(tmp_path: Path) -> None:
    serving = make_service(tmp_path, precision="fp32")
    serving.start()
    copy_version(tmp_path / "m", "2")
    frame = normalise(make_dataset(1, seed=3)[0])
    failures: list[BaseException] = []
    seen: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                seen.append(serving.infer_tensor(frame)[0].model)
            except BaseException as exc:  # noqa: BLE001 - every failure is the finding
                failures.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(3):
            serving.activate("defect@2")
            serving.activate("defect@1")
        serving.activate("defect@2")
        count = len(seen)
        while len(seen) < count + 50:
            pass
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == []
    assert "defect@1" in seen
    assert seen[-1] == "defect@2"


def test_gpu_backends_fail_cleanly_without_a_gpu_and_say_why(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA; the unavailable path is not reachable")
    for name in ("ort-gpu", "tensorrt"):
        with pytest.raises(BackendUnavailableError) as caught:
            create_backend(name, InferenceSettings(), tmp_path)  # type: ignore[arg-type]
        assert caught.value.hint
    serving = make_service(tmp_path, order=["tensorrt", "ort-gpu", "ort-cpu"])
    served = serving.start()
    assert served.loaded.backend == "ort-cpu"
    assert "tensorrt:" in served.why and "ort-gpu:" in served.why
    assert set(serving.unavailable) == {"tensorrt", "ort-gpu"}


def test_named_backend_that_is_missing_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendUnavailableError, match="no inference backend can serve"):
        make_service(tmp_path, backend="ort-gpu").start()


class SlowEngineBackend:
    """A stand-in for TensorRT, which cannot be installed here: its first load 'builds' a plan
    (slowly), later loads find it cached. It runs the FP32 model with ONNX Runtime."""

    name = "tensorrt"

    def __init__(self, build_s: float) -> None:
        self.build_s = build_s
        self.built = threading.Event()
        self.cpu = create_backend("ort-cpu", InferenceSettings(), Path("/nonexistent"))

    def precisions(self) -> tuple[Precision, ...]:
        return ("fp32",)

    def plan_is_cached(self, manifest: ModelManifest, precision: Precision) -> bool:
        return self.built.is_set()

    def load(self, folder: Path, manifest: ModelManifest, precision: Precision) -> Any:
        if not self.built.is_set():
            threading.Event().wait(self.build_s)
            self.built.set()
        model = self.cpu.load(folder, manifest, precision)
        model.backend = self.name
        return model


def test_serving_starts_on_the_next_backend_while_the_engine_builds(tmp_path: Path) -> None:
    fake = SlowEngineBackend(build_s=1.0)

    def factory(name: str, settings: InferenceSettings, cache: Path) -> Any:
        return fake if name == "tensorrt" else create_backend(name, settings, cache)  # type: ignore[arg-type]

    serving = InferenceService(
        InferenceSettings(precision="fp32"),
        installed_registry(tmp_path / "m"),
        ["tensorrt", "ort-cpu"],
        tmp_path / "engines",
        backend_factory=factory,
    )
    first = serving.start()
    assert first.loaded.backend == "ort-cpu"
    assert "engine building in the background" in first.why
    frame = np.zeros((1, 1, 64, 64), dtype=np.float32)
    assert serving.infer_tensor(frame)[0].backend == "ort-cpu"  # serves meanwhile
    serving.wait_background(30)
    assert serving.infer_tensor(frame)[0].backend == "tensorrt"
    second = InferenceService(
        InferenceSettings(precision="fp32"),
        serving.registry,
        ["tensorrt", "ort-cpu"],
        tmp_path / "engines",
        backend_factory=factory,
    )
    assert second.start().loaded.backend == "tensorrt"  # plan cached: no fallback


def test_engine_cache_key_separates_gpu_trt_model_and_precision(tmp_path: Path) -> None:
    key = EngineKey("Orin (nvgpu)", "8.7", "10.3.0", "ab" * 32, "fp16")
    assert key.file_name() == "orin-nvgpu_sm87_trt10.3.0_abababababababab_fp16.plan"
    variants = {
        EngineKey("Xavier", "7.2", "10.3.0", "ab" * 32, "fp16"),
        EngineKey("Orin (nvgpu)", "8.7", "8.5.2", "ab" * 32, "fp16"),
        EngineKey("Orin (nvgpu)", "8.7", "10.3.0", "cd" * 32, "fp16"),
        EngineKey("Orin (nvgpu)", "8.7", "10.3.0", "ab" * 32, "int8"),
    }
    assert len({k.file_name() for k in variants | {key}}) == 5
    assert key.path_in(tmp_path).parent == tmp_path


@pytest.mark.gpu
def test_ort_gpu_runs_the_defect_model_on_cuda(tmp_path: Path) -> None:
    """Runs where onnxruntime-gpu and a CUDA GPU exist (see ../shared/GPU.md)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"no CUDA execution provider here: {ort.get_available_providers()}")
    serving = make_service(tmp_path, order=["ort-gpu"], precision="fp32")
    served = serving.start()
    assert "CUDAExecutionProvider" in served.loaded.describe()["providers"]
    rng = np.random.default_rng(1)
    assert serving.infer_pixels(make_image("crack", rng)).label == "crack"


@pytest.mark.parametrize("classes", [2, 4, 64, 65, 1000])
@pytest.mark.parametrize("logits", [True, False])
def test_the_top_class_is_numpys_argmax_and_softmax_score(classes: int, logits: bool) -> None:
    from edge.inference.service import top_class

    rng = np.random.default_rng(classes)
    for _ in range(50):
        row = rng.normal(0, 4, classes).astype(np.float32)
        index, score = top_class(row, logits=logits)
        assert index == int(row.argmax())
        wanted = float(np.exp(row - row.max()).sum() ** -1) if logits else float(row.max())
        assert score == pytest.approx(wanted, rel=1e-5)
    with_nan = np.array([0.1, np.nan, 0.3], dtype=np.float32)
    assert top_class(with_nan, logits=logits)[0] == int(with_nan.argmax())


def test_the_cpu_fast_path_answers_exactly_what_the_public_session_run_does(
    tmp_path: Path,
) -> None:
    loaded = make_service(tmp_path, precision="fp32").start().loaded
    assert loaded._native is not None  # type: ignore[attr-defined]  # OrtModel's fast path
    batch = normalise(make_dataset(3, seed=4)[0])
    public = loaded.session.run(None, {"image": batch})[0]  # type: ignore[attr-defined]
    assert np.array_equal(loaded.run(batch), public)
