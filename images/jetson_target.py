"""The JetPack a Jetson board's bundle and fleet service target (``images/jetson/targets.yaml``).

One table, read by the flash bundle (what to install into NVIDIA's sample root file system),
the balena fleet (which Ubuntu base and L4T package source) and the manifests (which JetPack and
TensorRT a build was made for). Whether a JetPack's own Python can run the application is not a
second table: it is the target's ``python`` against ``requires-python`` in ``pyproject.toml``
(:func:`python_runs_application`); the bundle refuses such a target, the balena fleet serves it
from the generic template with CPU inference.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.board import BoardProfile, load_board_profiles
from edge.errors import InputError
from images.paths import REPO_ROOT

TARGETS_FILE = Path(__file__).with_name("jetson") / "targets.yaml"
L4T_REPO = "https://repo.download.nvidia.com/jetson"


class JetsonTargetError(InputError):
    """A board has no JetPack target, or the target cannot host the application."""


@dataclass(frozen=True)
class PythonTarget:
    """The interpreter and C library wheels are resolved for (aarch64, CPython)."""

    version: str  # "3.10"
    glibc: str  # "2.35"
    constraints: tuple[str, ...] = ()  # e.g. "numpy<2", resolved together with the app

    @property
    def nodot(self) -> str:
        return self.version.replace(".", "")

    @property
    def platforms(self) -> tuple[str, ...]:
        """Every manylinux tag this glibc runs, newest first (pip does not expand them)."""
        major, minor = (int(part) for part in self.glibc.split("."))
        return (
            *(f"manylinux_{major}_{m}_aarch64" for m in range(minor, 16, -1)),
            "manylinux2014_aarch64",
        )


class JetPackTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    l4t_release: str = Field(pattern=r"^\d+\.\d+$", description="apt release r<this>")
    jetpack: str
    soc: str = Field(pattern=r"^t\d+$", description="L4T apt component: t234 Orin, t194 Xavier")
    ubuntu: str = Field(pattern=r"^\d\d\.\d\d$")
    ubuntu_codename: str
    python: str = Field(pattern=r"^3\.\d+$")
    glibc: str = Field(pattern=r"^2\.\d+$")
    cuda: str
    cudnn: str
    tensorrt: str
    constraints: tuple[str, ...] = ()
    packages: tuple[str, ...] = Field(min_length=1)

    @property
    def python_target(self) -> PythonTarget:
        return PythonTarget(self.python, self.glibc, self.constraints)

    @property
    def apt_sources(self) -> tuple[str, ...]:
        return tuple(
            f"deb {L4T_REPO}/{component} r{self.l4t_release} main"
            for component in ("common", self.soc)
        )

    def application_gap(self) -> str | None:
        """Why the application cannot run in a venv on this JetPack's Python; ``None`` when it
        can."""
        wanted = application_requires_python()
        if python_runs_application(self.python, wanted):
            return None
        return (
            f"JetPack {self.jetpack} (Jetson Linux R{self.l4t_release}) has Python {self.python}, "
            f"the application needs Python {wanted} (requires-python in pyproject.toml), and "
            f"JetPack's TensorRT and CUDA Python bindings exist only for Python {self.python}"
        )

    def versions(self) -> dict[str, str]:
        """What a manifest records about the GPU stack this build targets."""
        return {
            "l4t_release": self.l4t_release,
            "jetpack": self.jetpack,
            "ubuntu": self.ubuntu,
            "python": self.python,
            "cuda": self.cuda,
            "cudnn": self.cudnn,
            "tensorrt": self.tensorrt,
        }


@cache
def application_requires_python() -> str:
    """``requires-python`` of this repo's package: what every Python it is installed on needs."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return str(project["project"]["requires-python"])


def python_runs_application(python: str, requires_python: str) -> bool:
    """Whether CPython ``python`` ("3.8") satisfies ``requires_python`` (">=3.10")."""
    return SpecifierSet(requires_python).contains(Version(f"{python}.0"))


@cache
def _targets() -> dict[str, JetPackTarget]:
    raw = yaml.safe_load(TARGETS_FILE.read_text(encoding="utf-8"))
    try:
        return {str(key): JetPackTarget.model_validate(value) for key, value in raw.items()}
    except ValidationError as exc:
        raise JetsonTargetError(
            f"JetPack targets are malformed: {exc}",
            where=str(TARGETS_FILE),
            hint="fix the file; every release needs every field",
        ) from exc


def target_for(board: BoardProfile) -> JetPackTarget:
    if board.l4t is None:
        raise JetsonTargetError(
            f"board {board.name} is not a Jetson (its profile has no l4t section)",
            where=f"hw/{board.name}.yaml",
            hint="Jetson profiles name their Jetson Linux release under l4t.release",
        )
    target = _targets().get(str(board.l4t.release))
    if target is None:
        raise JetsonTargetError(
            f"no JetPack target for Jetson Linux R{board.l4t.release} (board {board.name})",
            where=str(TARGETS_FILE),
            hint=f"add R{board.l4t.release} with its Ubuntu, Python and JetPack packages",
        )
    if not target.jetpack.startswith(board.l4t.jetpack):
        raise JetsonTargetError(
            f"hw/{board.name}.yaml says JetPack {board.l4t.jetpack}, the R{board.l4t.release} "
            f"target is JetPack {target.jetpack}",
            where=str(TARGETS_FILE),
            hint="make the board profile and the targets table agree",
        )
    return target


def jetson_targets() -> dict[str, JetPackTarget]:
    """Each Jetson board profile's JetPack target, by board name."""
    boards = load_board_profiles()
    return {name: target_for(boards[name]) for name in sorted(boards) if boards[name].l4t}
