"""``ort-gpu``: onnxruntime-gpu with the TensorRT execution provider, falling back to CUDA.

Needs the ``onnxruntime-gpu`` build (``pip install 'moltbot-edge[gpu]'`` on x86-64, NVIDIA's
Jetson wheel on a Jetson). Verified on an H100 for the CUDA EP (see ../shared/GPU.md); the
TensorRT EP is not verified on hardware (TensorRT's full libraries are not obtainable here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from edge.config.model import InferenceSettings
from edge.errors import BackendUnavailableError
from edge.inference.backends.ort_cpu import OrtModel, open_session, session_options
from edge.inference.manifest import ModelManifest, Precision


def gpu_providers(available: list[str], cache_dir: Path, fp16: bool) -> list[Any]:
    """TensorRT EP (with its engine cache) first when present, then CUDA, then CPU."""
    if "CUDAExecutionProvider" not in available:
        raise BackendUnavailableError(
            f"ONNX Runtime has no CUDA execution provider here (providers: {available})",
            hint="install onnxruntime-gpu with a CUDA that matches the driver, on a machine "
            "with an NVIDIA GPU; `moltbot doctor` lists what is found",
        )
    providers: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        providers.append(
            (
                "TensorrtExecutionProvider",
                {
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": str(cache_dir),
                    "trt_fp16_enable": fp16,
                },
            )
        )
    providers += ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return providers


class OrtGpuBackend:
    name = "ort-gpu"

    def __init__(self, settings: InferenceSettings, engine_cache_dir: Path) -> None:
        self.settings = settings
        self.cache_dir = engine_cache_dir / "ort-trt"
        self.available = ort.get_available_providers()
        gpu_providers(self.available, self.cache_dir, fp16=False)  # fail early, with a reason

    def precisions(self) -> tuple[Precision, ...]:
        return ("fp16", "fp32")

    def load(self, folder: Path, manifest: ModelManifest, precision: Precision) -> OrtModel:
        variant = "fp32" if precision == "fp16" else precision  # FP16 is built from FP32 by TRT
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        providers = gpu_providers(self.available, self.cache_dir, fp16=precision == "fp16")
        session = open_session(
            folder / manifest.variants[variant].file, session_options(self.settings), providers
        )
        return OrtModel(session, manifest, precision, self.name, session.get_providers())


def create(settings: InferenceSettings, engine_cache_dir: Path) -> OrtGpuBackend:
    return OrtGpuBackend(settings, engine_cache_dir)
