"""The serving core: one active model, swapped atomically, never dropped for a bad one.

``activate`` verifies a version, loads it on the chosen backend beside the current one, warms it
up, runs its reference inputs, and only then swaps; requests already running finish on the old
model (they hold their own reference). With ``backend: auto`` the board's preference order is
walked; when TensorRT has no cached plan yet, the next backend serves while the engine builds in
the background, then the service swaps to it.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.config.model import InferenceBackend, InferenceSettings
from edge.errors import BackendUnavailableError, ModelRejectedError
from edge.inference.backends import create_backend
from edge.inference.backends.base import Backend, LoadedModel
from edge.inference.manifest import ModelManifest, Precision
from edge.inference.preprocess import decode_image, softmax, to_tensor
from edge.inference.registry import ModelRegistry, parse_ref
from edge.inference.verification import (
    backend_errors_refuse_the_model,
    check_output_shape,
    check_reference,
    run_checked,
    verify_folder,
)

logger = logging.getLogger(__name__)
PRECISION_TRIAL_RUNS = 30
SMALL_OUTPUT = 64  # classes; up to this many, plain Python beats numpy's per-call cost

BackendFactory = Callable[[InferenceBackend, InferenceSettings, Path], Backend]


@dataclass
class Prediction:
    """One frame's result. Probabilities of every class are computed only when asked for, so
    the hot path (label and score) costs a few microseconds whatever the number of classes."""

    model: str
    backend: str
    precision: str
    label: str
    score: float
    latency_ms: float
    labels: Sequence[str] = field(repr=False)
    raw: NDArray[np.float32] = field(repr=False)
    raw_is_logits: bool = field(repr=False, default=True)

    @cached_property
    def probabilities(self) -> NDArray[np.float32]:
        return softmax(self.raw) if self.raw_is_logits else self.raw

    @property
    def scores(self) -> dict[str, float]:
        return dict(zip(self.labels, self.probabilities.tolist(), strict=True))

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "precision": self.precision,
            "label": self.label,
            "score": self.score,
            "scores": self.scores,
            "latency_ms": self.latency_ms,
        }


@dataclass
class ServedModel:
    loaded: LoadedModel
    folder: Path
    why: str
    precision_trials_ms: dict[str, float] = field(default_factory=dict)
    reference_deviation: float | None = None

    def describe(self) -> dict[str, Any]:
        return self.loaded.describe() | {
            "why": self.why,
            "precision_trials_ms": self.precision_trials_ms,
            "reference_deviation": self.reference_deviation,
        }


def top_class(row: NDArray[np.float32], *, logits: bool) -> tuple[int, float]:
    """The winning class and its score (for logits, its softmax probability, without the full
    softmax). A few classes are done in plain Python: numpy's cost per call (several µs for
    argmax, subtract, exp, sum) was most of the per-frame overhead on a 0.15 ms model."""
    if len(row) > SMALL_OUTPUT:
        return top_class_numpy(row, logits=logits)
    values = row.tolist()
    if not math.isfinite(sum(values)):  # NaN or inf: numpy's answer, as for large outputs
        return top_class_numpy(row, logits=logits)
    top = max(values)
    index = values.index(top)
    return index, (1.0 / sum([math.exp(v - top) for v in values]) if logits else top)


def top_class_numpy(row: NDArray[np.float32], *, logits: bool) -> tuple[int, float]:
    index = int(row.argmax())
    return index, (1.0 / float(np.exp(row - row[index]).sum()) if logits else float(row[index]))


class InferenceService:
    def __init__(
        self,
        settings: InferenceSettings,
        registry: ModelRegistry,
        backend_order: Sequence[InferenceBackend],
        engine_cache_dir: Path,
        *,
        backend_factory: BackendFactory = create_backend,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.engine_cache_dir = engine_cache_dir
        self._factory = backend_factory
        self._order = [settings.backend] if settings.backend != "auto" else list(backend_order)
        self._backends: dict[str, Backend] = {}
        self.unavailable: dict[str, str] = {}
        self._current: ServedModel | None = None
        self._swap_lock = threading.Lock()
        self._background: threading.Thread | None = None
        self._refused: set[str] = set()
        self.observers: list[Callable[[Prediction], None]] = []  # e.g. the latency histogram

    # -- serving ----------------------------------------------------------------------------

    @property
    def current(self) -> ServedModel:
        served = self._current
        if served is None:
            raise ModelRejectedError("no model is loaded yet", hint="activate a model first")
        return served

    @property
    def ready(self) -> bool:
        return self._current is not None

    def infer_tensor(self, batch: NDArray[np.float32]) -> list[Prediction]:
        served = self.current  # one reference for the whole call: a swap cannot split it
        loaded = served.loaded
        started = time.perf_counter()
        raw = loaded.run(batch)
        latency_ms = (time.perf_counter() - started) * 1000
        manifest = loaded.manifest
        logits = manifest.output.kind == "logits"
        labels = manifest.labels
        predictions = []
        for row in raw:
            index, score = top_class(row, logits=logits)
            predictions.append(
                Prediction(
                    manifest.ref,
                    loaded.backend,
                    loaded.precision,
                    labels[index],
                    score,
                    latency_ms,
                    labels,
                    row,
                    logits,
                )
            )
        for observer in self.observers:
            for prediction in predictions:
                observer(prediction)
        return predictions

    def infer_pixels(self, pixels: NDArray[np.uint8]) -> Prediction:
        return self.infer_tensor(to_tensor(pixels, self.current.loaded.manifest))[0]

    def infer_image(self, data: bytes, source: str = "upload") -> Prediction:
        return self.infer_pixels(decode_image(data, source))

    # -- activation ---------------------------------------------------------------------------

    def start(self) -> ServedModel:
        """Serve the configured model (its active version, else the newest)."""
        return self.activate(self.settings.active_model, persist=False)

    def activate(self, ref: str, *, persist: bool = True) -> ServedModel:
        """Verify, load and swap in ``ref``. A version refused here is marked refused in the
        registry (``persist``), so no later automatic choice picks it."""
        name, version = parse_ref(ref)
        version, folder = self.registry.resolve(name, version)
        try:
            manifest = verify_folder(folder)
            with self._swap_lock:
                served = self._load_best(folder, manifest)
                previous, self._current = self._current, served
                if persist:
                    serving = previous.loaded.manifest if previous is not None else None
                    self.registry.set_active(
                        name,
                        version,
                        serving=serving.version if serving and serving.name == name else None,
                    )
        except ModelRejectedError as exc:
            if persist:
                self.registry.mark_refused(name, version, exc.what)
            raise
        logger.info(
            "serving %s on %s (%s): %s",
            manifest.ref,
            served.loaded.backend,
            served.loaded.precision,
            served.why,
        )
        if previous is not None and previous.loaded is not served.loaded:
            previous.loaded.close()
        return served

    def reload_if_changed(self) -> bool:
        """Follow an ``active`` pointer changed by another process (``moltbot model activate``)."""
        served = self._current
        if served is None:
            return False
        manifest = served.loaded.manifest
        wanted = self.registry.active(manifest.name)
        ref = f"{manifest.name}@{wanted}"
        if wanted is None or wanted == manifest.version or ref in self._refused:
            return False
        try:
            self.activate(ref, persist=False)
        except Exception as exc:  # noqa: BLE001 - a bad version must never stop the serving one
            self._refused.add(ref)
            if isinstance(exc, ModelRejectedError):
                self.registry.mark_refused(manifest.name, wanted, exc.what)
            logger.error("not switching to %s: %s; %s keeps serving", ref, exc, manifest.ref)
            return False
        return True

    def rollback(self, name: str) -> ServedModel:
        return self.activate(f"{name}@{self.registry.rollback_target(name)}")

    def _load_best(self, folder: Path, manifest: ModelManifest) -> ServedModel:
        reasons = []
        for name in self._order:
            backend = self._backend(name)
            if backend is None:
                reasons.append(f"{name}: {self.unavailable[name]}")
                continue
            if (
                getattr(backend, "plan_is_cached", None) is not None
                and not any(
                    backend.plan_is_cached(manifest, p)  # type: ignore[attr-defined]
                    for p in self._precision_candidates(backend, manifest)
                )
                and name != self._order[-1]
            ):
                self._build_in_background(backend, folder, manifest)
                reasons.append(f"{name}: engine building in the background")
                continue
            why = (
                "; ".join([*reasons, f"{name}: first that works"])
                if reasons
                else (f"{name}: first in the preference order")
            )
            return self._load_on(backend, folder, manifest, why)
        raise BackendUnavailableError(
            f"no inference backend can serve {manifest.ref}: {'; '.join(reasons)}",
            hint="set inference.backend to one this device has (`moltbot doctor`)",
        )

    def _backend(self, name: InferenceBackend) -> Backend | None:
        if name in self._backends:
            return self._backends[name]
        if name in self.unavailable:
            return None
        try:
            backend = self._factory(name, self.settings, self.engine_cache_dir)
        except BackendUnavailableError as exc:
            self.unavailable[name] = exc.what
            logger.info("backend %s unavailable: %s", name, exc.what)
            return None
        self._backends[name] = backend
        return backend

    def _precision_candidates(self, backend: Backend, manifest: ModelManifest) -> list[Precision]:
        wanted = self.settings.precision
        offered = [
            p
            for p in backend.precisions()
            if p in manifest.variants
            or (p == "fp16" and "fp32" in manifest.variants and backend.name != "ort-cpu")
        ]
        if wanted != "auto":
            if wanted not in offered:
                raise ModelRejectedError(
                    f"{manifest.ref} has no {wanted} variant runnable on {backend.name}",
                    hint=f"set inference.precision to auto or one of {offered}",
                )
            return [wanted]
        baseline = manifest.variants.get("fp32")
        floor = (baseline.accuracy or 0) - manifest.accuracy_tolerance if baseline else 0
        return [
            p
            for p in offered
            if p not in manifest.variants
            or p == "fp32"
            or (manifest.variants[p].accuracy or -1) >= floor
        ]

    def _load_on(
        self, backend: Backend, folder: Path, manifest: ModelManifest, why: str
    ) -> ServedModel:
        candidates = self._precision_candidates(backend, manifest)
        trials: dict[str, float] = {}
        loaded: list[LoadedModel] = []
        try:
            for precision in candidates:
                model = _load_checked(backend, folder, manifest, precision)
                loaded.append(model)
                check_output_shape(model, folder)
                trials[precision] = self._warm_up(
                    model,
                    folder,
                    runs=PRECISION_TRIAL_RUNS if len(candidates) > 1 else self.settings.warmup_runs,
                )
            best = min(loaded, key=lambda m: trials[m.precision])
            deviation = check_reference(best, folder)
        except Exception:
            for model in loaded:
                model.close()
            raise
        for model in loaded:
            if model is not best:
                model.close()
        if len(trials) > 1:
            why += f"; precision {best.precision} measured fastest"
        return ServedModel(best, folder, why, trials, deviation)

    def _warm_up(self, model: LoadedModel, folder: Path, runs: int) -> float:
        """Run ``runs`` single-frame inferences; the median latency in ms."""
        channels, (height, width) = model.manifest.input.channels, model.manifest.input.height_width
        batch = np.zeros((1, channels, height, width), dtype=np.float32)
        timings = []
        for _ in range(max(1, runs)):
            started = time.perf_counter()
            run_checked(model, batch, folder)
            timings.append((time.perf_counter() - started) * 1000)
        return statistics.median(timings)

    def _build_in_background(self, backend: Backend, folder: Path, manifest: ModelManifest) -> None:
        if self._background is not None and self._background.is_alive():
            return

        def build() -> None:
            try:
                served = self._load_on(
                    backend, folder, manifest, f"{backend.name}: engine built in the background"
                )
            except Exception:
                logger.exception(
                    "background %s build for %s failed; staying on the current backend",
                    backend.name,
                    manifest.ref,
                )
                return
            with self._swap_lock:
                current = self._current
                if current is None or current.loaded.manifest.ref != manifest.ref:
                    served.loaded.close()  # another version was activated meanwhile
                    return
                self._current = served
            logger.info("swapped %s to %s after its background build", manifest.ref, backend.name)
            current.loaded.close()

        self._background = threading.Thread(target=build, name=f"build-{backend.name}", daemon=True)
        self._background.start()

    def wait_background(self, timeout_s: float) -> None:
        if self._background is not None:
            self._background.join(timeout_s)

    def describe(self) -> dict[str, Any]:
        served = self._current
        return {
            "order": self._order,
            "unavailable": self.unavailable,
            "serving": served.describe() if served else None,
        }


def _load_checked(
    backend: Backend, folder: Path, manifest: ModelManifest, precision: Precision
) -> LoadedModel:
    """``backend.load`` with what a backend raises on a hostile model turned into a refusal."""
    hint = "re-export the model, or check the manifest"
    with backend_errors_refuse_the_model("load", backend.name, folder, hint):
        return backend.load(folder, manifest, precision)
