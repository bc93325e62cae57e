"""``ort-cpu``: ONNX Runtime's CPU execution provider (MLAS: NEON on the Pi, AVX2/512 on x86)."""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from edge.config.model import InferenceSettings
from edge.cpu import physical_cores, read_cpu_features
from edge.errors import ModelRejectedError
from edge.inference.manifest import ModelManifest, Precision

NativeRun = Callable[[list[str], dict[str, Any], Any], list[Any]]  # (outputs, feed, options)

OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(settings: InferenceSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads or physical_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = OPTIMIZATION_LEVELS[settings.graph_optimization]
    options.enable_cpu_mem_arena = settings.enable_cpu_mem_arena
    options.log_severity_level = 3
    return options


def simd_description() -> str:
    features = read_cpu_features()
    if platform.machine() in ("aarch64", "arm64"):
        extras = (
            " + dot product" if "dotprod" in features else " (no dot product: INT8 gains small)"
        )
        return f"NEON (MLAS){extras}"
    wide = [name for name in ("avx512", "vnni", "avx2") if name in features]
    return f"x86-64 {'/'.join(wide) or 'SSE'} (MLAS)"


class OrtModel:
    """An ``InferenceSession`` with the manifest's input/output names bound.

    ``run`` calls the session's native ``run`` directly when only the CPU provider serves:
    ``InferenceSession.run`` first re-checks the feed's names and ownership against the
    model (a few µs a frame, 2 % of a 0.15 ms model), which the manifest's names, checked
    here once, make unnecessary; its provider fallback concerns GPU providers only, which
    keep the public call.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        manifest: ModelManifest,
        precision: Precision,
        backend: str,
        providers: list[str],
    ) -> None:
        self.session = session
        self.manifest = manifest
        self.precision = precision
        self.backend = backend
        self._providers = providers
        self._input = manifest.input.name
        self._outputs = [manifest.output.name]
        self._closed = threading.Event()
        self._native = self._native_run(session, providers)

    def _native_run(self, session: ort.InferenceSession, providers: list[str]) -> NativeRun | None:
        """The session's native ``run`` when it may stand in for the public one (CPU only,
        the manifest's names present in the model); None otherwise."""
        native = getattr(session, "_sess", None)
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if native is None or providers != ["CPUExecutionProvider"]:
            return None
        if self._input not in inputs or self._outputs[0] not in outputs:
            return None  # the public call reports what is wrong, at the first frame
        run: NativeRun = native.run
        return run

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        feed = {self._input: batch}
        native = self._native
        outputs = (
            native(self._outputs, feed, None)
            if native is not None
            else self.session.run(self._outputs, feed)
        )
        result: NDArray[np.float32] = outputs[0]
        return result

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.manifest.ref,
            "precision": self.precision,
            "providers": self._providers,
            "isa": simd_description(),
            "onnxruntime": ort.__version__,
        }

    def close(self) -> None:
        self._closed.set()  # the session is freed when the last in-flight call drops it


def open_session(
    path: Path, options: ort.SessionOptions, providers: list[Any]
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelRejectedError(
            f"ONNX Runtime cannot load the model: {first_line}",
            where=str(path),
            hint="re-export the model, or check the manifest's file",
        ) from exc


class OrtCpuBackend:
    name = "ort-cpu"

    def __init__(self, settings: InferenceSettings, engine_cache_dir: Path) -> None:
        self.settings = settings
        del engine_cache_dir  # nothing to cache on the CPU

    def precisions(self) -> tuple[Precision, ...]:
        return ("fp32", "int8")

    def load(self, folder: Path, manifest: ModelManifest, precision: Precision) -> OrtModel:
        path = folder / manifest.variants[precision].file
        session = open_session(path, session_options(self.settings), ["CPUExecutionProvider"])
        return OrtModel(session, manifest, precision, self.name, session.get_providers())


def create(settings: InferenceSettings, engine_cache_dir: Path) -> OrtCpuBackend:
    return OrtCpuBackend(settings, engine_cache_dir)
