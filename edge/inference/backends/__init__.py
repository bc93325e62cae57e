"""Inference backends, found by name and imported only when selected.

Importing ``edge`` or this package never imports TensorRT, pycuda or onnxruntime-gpu.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import BackendUnavailableError

if TYPE_CHECKING:
    from edge.config.model import InferenceBackend, InferenceSettings
    from edge.inference.backends.base import Backend

BACKEND_MODULES: dict[str, str] = {
    "ort-cpu": "edge.inference.backends.ort_cpu",
    "ort-gpu": "edge.inference.backends.ort_gpu",
    "tensorrt": "edge.inference.backends.tensorrt",
}


def create_backend(
    name: InferenceBackend, settings: InferenceSettings, engine_cache_dir: Path
) -> Backend:
    """Import and construct one backend; raise ``BackendUnavailableError`` saying why not."""
    try:
        module = importlib.import_module(BACKEND_MODULES[name])
    except ImportError as exc:
        raise BackendUnavailableError(
            f"{name} backend cannot be imported: {exc}",
            hint="`moltbot doctor` lists what this device has",
        ) from exc
    try:
        backend: Backend = module.create(settings, engine_cache_dir)
    except BackendUnavailableError:
        raise
    except Exception as exc:  # a CUDA driver mismatch can raise anything
        raise BackendUnavailableError(f"{name} backend does not start: {exc}") from exc
    return backend
