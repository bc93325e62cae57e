"""Board profiles (``hw/*.yaml``) and detecting which board this is.

Profiles are data. One function loads and validates them all; detection reads the device
tree's ``model`` string under a root that tests can point elsewhere.
"""

from __future__ import annotations

import logging
import platform
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.config.model import InferenceBackend
from edge.errors import BoardProfileError
from edge.files import load_data_file

if sys.version_info >= (3, 11):
    from importlib.resources.abc import Traversable
else:  # Python 3.10 (JetPack 6's system Python)
    from importlib.abc import Traversable

logger = logging.getLogger(__name__)

DEVICE_TREE_MODEL_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
SimdFeature = Literal["neon", "dotprod", "sse4_2", "avx2", "avx512", "vnni"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuSpec(_Strict):
    model: str
    cores: int = Field(ge=1)
    simd: list[SimdFeature]


class AcceleratorSpec(_Strict):
    kind: Literal["none", "nvidia-gpu"]
    gpu_arch: Literal["Volta", "Ampere", "Hopper"] | None = None
    compute_capability: str | None = Field(None, pattern=r"^\d+\.\d+$")
    tensorrt: bool

    @model_validator(mode="after")
    def _gpu_fields_match_kind(self) -> AcceleratorSpec:
        if self.kind == "none" and (self.gpu_arch or self.tensorrt):
            raise ValueError("a board without an accelerator has no gpu_arch and no tensorrt")
        if self.kind == "nvidia-gpu" and not self.gpu_arch:
            raise ValueError("an nvidia-gpu accelerator names its gpu_arch")
        return self


class PartitionSizes(_Strict):
    boot_mib: int = Field(ge=0, description="0: the board boots without our boot partition")
    root_mib: int = Field(ge=512)
    data_mib: int = Field(ge=64, description="initial size; grown to the medium at first boot")


class L4tSpec(_Strict):
    """What NVIDIA's flash tools need for a Jetson: release, board config, recovery USB ids."""

    release: int = Field(ge=32, description="Jetson Linux major release, e.g. 36 for R36.x")
    jetpack: str = Field(description="the JetPack that ships this release, e.g. 6")
    board_config: str = Field(description="flash.sh board config name")
    recovery_usb_ids: list[str] = Field(min_length=1, description="vendor:product in recovery")
    root_device: str = Field("internal", description="flash target (internal = eMMC)")


class BootDeviceSpec(_Strict):
    """Where the kernel finds the root file system on this board, for the image build's check
    that the initramfs holds every driver that device depends on (images/boot_path.py)."""

    node: str = Field(description="the boot device's device-tree node path or alias")
    device_trees: list[str] = Field(
        min_length=1, description="DTB files the image ships for this board (boot partition)"
    )


class BoardProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str
    arch: Literal["aarch64", "x86_64"]
    cpu: CpuSpec
    accelerator: AcceleratorSpec
    ram_options_gb: list[int] = Field(min_length=1)
    boot_medium: Literal["sd", "emmc", "disk"]
    storage_gb: int | None = Field(None, ge=1, description="fixed internal storage (eMMC)")
    has_rtc: bool
    dt_models: list[str]
    inference_backends: list[InferenceBackend] = Field(min_length=1)
    audio_input: str
    partitions: PartitionSizes
    balena_device_type: str | None = Field(None, description="balena device type slug")
    l4t: L4tSpec | None = None
    boot_device: BootDeviceSpec | None = Field(
        None, description="checked against the image's own DTB and initramfs at build time"
    )
    kernel_modules_unused: list[str] = Field(
        default_factory=list,
        description="module folders under lib/modules/<version>/kernel/ for hardware this board "
        "cannot have (an image leaves them out unless its recipe says slim.kernel_modules: false)",
    )


@dataclass(frozen=True)
class BoardDetection:
    """Which profile matched, the device-tree string it matched on, and why."""

    profile: BoardProfile | None
    dt_model: str | None
    reason: str


def default_profiles_dir() -> Traversable:
    return resources.files("hw")


def load_board_profiles(directory: Path | Traversable | None = None) -> dict[str, BoardProfile]:
    """Load and validate every ``*.yaml`` profile; the file name must equal the profile name."""
    folder = directory if directory is not None else default_profiles_dir()
    profiles: dict[str, BoardProfile] = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if not entry.name.endswith(".yaml"):
            continue
        profile = _load_profile(entry)
        expected = entry.name.removesuffix(".yaml")
        if profile.name != expected:
            raise BoardProfileError(
                f"board profile names itself {profile.name!r} but its file is {entry.name}",
                where=str(entry),
                hint=f"rename the file to {profile.name}.yaml or set name: {expected}",
            )
        profiles[profile.name] = profile
    if not profiles:
        raise BoardProfileError(
            "no board profiles found",
            where=str(folder),
            hint="the hw/ folder of moltbot-edge is missing; reinstall the package",
        )
    return profiles


def _load_profile(entry: Path | Traversable) -> BoardProfile:
    return load_data_file(
        entry,
        BoardProfile,
        error=BoardProfileError,
        what="board profile",
        hint="compare it with hw/rpi4b.yaml; every field is described in edge/board.py",
    )


def read_device_tree_model(root: Path = Path("/")) -> str | None:
    """The device tree's ``model`` string (NUL-terminated on disk), or None without one."""
    for relative in DEVICE_TREE_MODEL_FILES:
        candidate = root / relative
        try:
            raw = candidate.read_bytes()
        except OSError:
            continue
        text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace").strip()
        if text:
            return text
    return None


def match_board(
    profiles: dict[str, BoardProfile], dt_model: str | None, machine: str
) -> BoardDetection:
    """Pure decision: which profile fits this device-tree string and CPU architecture."""
    if dt_model is not None:
        for profile in profiles.values():
            if any(marker in dt_model for marker in profile.dt_models):
                return BoardDetection(profile, dt_model, f"device-tree model {dt_model!r}")
        return BoardDetection(
            None, dt_model, f"device-tree model {dt_model!r} matches no board profile"
        )
    generic = [p for p in profiles.values() if not p.dt_models and p.arch == machine]
    if generic:
        return BoardDetection(generic[0], None, f"no device tree; CPU architecture {machine}")
    return BoardDetection(None, None, f"no device tree and no generic profile for {machine}")


def detect_board(
    profiles: dict[str, BoardProfile],
    *,
    root: Path = Path("/"),
    machine: str | None = None,
) -> BoardDetection:
    return match_board(profiles, read_device_tree_model(root), machine or platform.machine())


def resolve_board(
    configured: str,
    profiles: dict[str, BoardProfile],
    *,
    root: Path = Path("/"),
    machine: str | None = None,
) -> BoardDetection:
    """The board named by ``device.board``, or the detected one when it says ``auto``."""
    if configured != "auto":
        if configured not in profiles:
            raise BoardProfileError(
                f"unknown board {configured!r}",
                where="device.board",
                hint=f"use one of: auto, {', '.join(sorted(profiles))}",
            )
        return BoardDetection(profiles[configured], None, "set by device.board")
    return detect_board(profiles, root=root, machine=machine)


def configured_profile(configured: str) -> BoardProfile | None:
    """The profile ``device.board`` names (or detection finds), or None if none fits.

    None means: trust no RTC and serve with ort-cpu only; the reason is logged once here.
    """
    try:
        detection = resolve_board(configured, load_board_profiles())
    except BoardProfileError as exc:
        logger.warning("%s; assuming a board without RTC and only ort-cpu", exc.what)
        return None
    if detection.profile is None:
        logger.warning("%s; assuming a board without RTC and only ort-cpu", detection.reason)
    return detection.profile


def backend_order(profile: BoardProfile | None) -> list[InferenceBackend]:
    """The inference backends ``auto`` walks on this board."""
    return list(profile.inference_backends) if profile else ["ort-cpu"]
