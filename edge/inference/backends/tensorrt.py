"""``tensorrt``: native TensorRT (≥ 8.5, name-based tensor API) with pycuda.

NOT VERIFIED ON HARDWARE: TensorRT's full libraries cannot be installed in this project's
workplace (see ../shared/GPU.md), so this module is written against NVIDIA's documented Python
API and everything around it (cache keys, fallback while building, selection) is tested without
it. Builds an engine from the ONNX file (FP16, or INT8 with a calibration cache, a workspace
limit, an optimisation profile for batches 1..8), serialises the plan under a key of GPU name +
compute capability + TensorRT version + model sha256 + precision, reloads it on the next start,
and runs with page-locked host buffers on a CUDA stream.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.config.model import InferenceSettings
from edge.errors import BackendUnavailableError, ModelRejectedError
from edge.inference.engine_cache import EngineKey
from edge.inference.manifest import ModelManifest, Precision

logger = logging.getLogger(__name__)
MAX_BATCH = 8

try:
    import pycuda.driver as cuda
    import tensorrt as trt
except ImportError as exc:  # the common case off a Jetson: say why, once, when selected
    _IMPORT_ERROR: Exception | None = exc
else:
    _IMPORT_ERROR = None


def check_available() -> None:
    if _IMPORT_ERROR is not None:
        raise BackendUnavailableError(
            f"TensorRT backend unavailable: {_IMPORT_ERROR}",
            hint="on a Jetson install JetPack's python3-libnvinfer and pycuda; elsewhere use "
            "ort-gpu or ort-cpu",
        )


class TensorRtModel:
    def __init__(
        self,
        engine: Any,
        manifest: ModelManifest,
        precision: Precision,
        context: Any,
        key: EngineKey,
    ) -> None:
        self.manifest = manifest
        self.precision = precision
        self.backend = "tensorrt"
        self._engine = engine
        self._key = key
        self._lock = threading.Lock()  # one execution context: one inference at a time
        self._cuda_context = context
        self._exec = engine.create_execution_context()
        self._stream = cuda.Stream()
        channels, (height, width) = manifest.input.channels, manifest.input.height_width
        self._input_shape = (channels, height, width)
        self._host_in = cuda.pagelocked_empty((MAX_BATCH, *self._input_shape), np.float32)
        self._host_out = cuda.pagelocked_empty((MAX_BATCH, len(manifest.labels)), np.float32)
        self._device_in = cuda.mem_alloc(self._host_in.nbytes)
        self._device_out = cuda.mem_alloc(self._host_out.nbytes)

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        outputs = [
            self._run_chunk(batch[i : i + MAX_BATCH]) for i in range(0, len(batch), MAX_BATCH)
        ]
        return np.concatenate(outputs)

    def _run_chunk(self, chunk: NDArray[np.float32]) -> NDArray[np.float32]:
        count = len(chunk)
        with self._lock:
            self._cuda_context.push()
            try:
                self._host_in[:count] = chunk
                self._exec.set_input_shape(self.manifest.input.name, (count, *self._input_shape))
                self._exec.set_tensor_address(self.manifest.input.name, int(self._device_in))
                self._exec.set_tensor_address(self.manifest.output.name, int(self._device_out))
                cuda.memcpy_htod_async(self._device_in, self._host_in, self._stream)
                if not self._exec.execute_async_v3(self._stream.handle):
                    raise RuntimeError("TensorRT execution failed")
                cuda.memcpy_dtoh_async(self._host_out, self._device_out, self._stream)
                self._stream.synchronize()
                return np.array(self._host_out[:count])
            finally:
                self._cuda_context.pop()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.manifest.ref,
            "precision": self.precision,
            "gpu": self._key.gpu_name,
            "compute_capability": self._key.compute_capability,
            "tensorrt": self._key.tensorrt_version,
            "plan": self._key.file_name(),
            "verified_on_hardware": False,
        }

    def close(self) -> None:
        self._device_in.free()
        self._device_out.free()


class TensorRtBackend:
    name = "tensorrt"

    def __init__(self, settings: InferenceSettings, engine_cache_dir: Path) -> None:
        check_available()
        self.settings = settings
        self.cache_dir = engine_cache_dir / "tensorrt"
        cuda.init()
        self._device = cuda.Device(0)
        self._logger = trt.Logger(trt.Logger.WARNING)

    def precisions(self) -> tuple[Precision, ...]:
        return ("fp16", "int8", "fp32")

    def key(self, manifest: ModelManifest, precision: Precision) -> EngineKey:
        source: Precision = (
            "int8" if precision == "int8" and "int8" in manifest.variants else "fp32"
        )
        major, minor = self._device.compute_capability()
        return EngineKey(
            str(self._device.name()),
            f"{major}.{minor}",
            str(trt.__version__),
            manifest.variants[source].sha256,
            precision,
        )

    def plan_is_cached(self, manifest: ModelManifest, precision: Precision) -> bool:
        return self.key(manifest, precision).path_in(self.cache_dir).is_file()

    def load(self, folder: Path, manifest: ModelManifest, precision: Precision) -> TensorRtModel:
        context = self._device.make_context()
        try:
            key = self.key(manifest, precision)
            plan_path = key.path_in(self.cache_dir)
            if not plan_path.is_file():
                self._build(folder, manifest, precision, plan_path)
            runtime = trt.Runtime(self._logger)
            engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
            if engine is None:
                plan_path.unlink(missing_ok=True)
                raise ModelRejectedError(
                    "the cached TensorRT plan does not load; removed it",
                    where=str(plan_path),
                    hint="restart to rebuild it",
                )
            return TensorRtModel(engine, manifest, precision, context, key)
        finally:
            context.pop()

    def _build(
        self, folder: Path, manifest: ModelManifest, precision: Precision, plan_path: Path
    ) -> None:
        source = folder / manifest.variants["int8" if precision == "int8" else "fp32"].file
        logger.warning(
            "building a TensorRT %s engine for %s; this can take minutes", precision, manifest.ref
        )
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse(source.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelRejectedError(
                f"TensorRT cannot parse the model: {errors}",
                where=str(source),
                hint="check the ONNX opset",
            )
        config = builder.create_builder_config()
        config.set_memory_pool_limit(
            trt.MemoryPoolType.WORKSPACE, self.settings.tensorrt_workspace_mib << 20
        )
        if precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # the QDQ model carries its own scales
        shape = (manifest.input.channels, *manifest.input.height_width)
        profile = builder.create_optimization_profile()
        profile.set_shape(manifest.input.name, (1, *shape), (1, *shape), (MAX_BATCH, *shape))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ModelRejectedError(
                "TensorRT could not build an engine",
                where=str(source),
                hint="see the TensorRT log above; try fp32",
            )
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = plan_path.with_suffix(".partial")
        temporary.write_bytes(bytes(plan))
        temporary.replace(plan_path)


def create(settings: InferenceSettings, engine_cache_dir: Path) -> TensorRtBackend:
    return TensorRtBackend(settings, engine_cache_dir)
