"""The wheelhouse a Jetson bundle carries: every wheel the application needs, resolved here for
the JetPack's own Python and aarch64 (``pip download --platform … --python-version …``), so the
flash step installs it offline into a venv on that Python.

The downloaded dependencies are cached by their inputs (requirements, target, this module);
this repo's wheel is built fresh for every bundle. Every wheel's tags are checked against the
target before a bundle is made: a wheel the device's Python cannot install stops the build here,
not at flash time.
"""

from __future__ import annotations

import email.parser
import hashlib
import logging
import shutil
import sys
import zipfile
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from images.app import EXTRAS, SOURCE_ONLY, build_device_wheel, requirements
from images.jetson_target import (
    JetsonTargetError,
    PythonTarget,
    jetson_targets,
    python_runs_application,
)
from images.run import run

logger = logging.getLogger(__name__)
# The venv is made with --without-pip (Ubuntu's python3 has no ensurepip without python3-venv);
# the flash step runs pip from its own wheel.
INSTALLER = ("pip",)
APP_WHEEL_GLOB = "moltbot_edge-*.whl"


def target_tags(target: PythonTarget) -> frozenset[Tag]:
    """Every wheel tag the target's CPython accepts, as pip on the device computes them."""
    version = tuple(int(part) for part in target.version.split("."))
    platforms = list(target.platforms)
    return frozenset(
        [
            *cpython_tags(version, platforms=platforms),
            *compatible_tags(version, f"cp{target.nodot}", platforms),
        ]
    )


def wrong_tags(wheelhouse: Path, target: PythonTarget) -> list[str]:
    """The wheels in ``wheelhouse`` the target cannot install, each with its tags."""
    accepted = target_tags(target)
    wrong = []
    for wheel in sorted(wheelhouse.glob("*.whl")):
        tags = parse_wheel_filename(wheel.name)[3]
        if not tags & accepted:
            wrong.append(f"{wheel.name} ({', '.join(sorted(str(t) for t in tags))})")
    return wrong


def requires_python(wheel: Path) -> str:
    """The wheel's Requires-Python ("" when it names none)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.BytesParser().parsebytes(archive.read(name), headersonly=True)
    return str(metadata.get("Requires-Python", ""))


def check_application_fits(app_wheel: Path, target: PythonTarget, where: str) -> None:
    """Refuse a target whose Python the application does not declare support for; the hint
    names the Jetson boards whose JetPack's Python it does support."""
    wanted = requires_python(app_wheel)
    if not wanted or python_runs_application(target.version, wanted):
        return
    fitting = [
        f"{board} (JetPack {jetpack.jetpack}, Python {jetpack.python})"
        for board, jetpack in jetson_targets().items()
        if python_runs_application(jetpack.python, wanted)
    ]
    hint = (
        "this JetPack cannot host the appliance: build the bundle for a board whose JetPack's "
        f"Python it supports — {', '.join(fitting)} — from a recipe for that board "
        "(images/recipes/<board>.yaml)"
        if fitting
        else f"make moltbot-edge and its dependencies run on Python {target.version} "
        "(requires-python in pyproject.toml)"
    )
    raise JetsonTargetError(
        f"the application needs Python {wanted}, but this JetPack's system Python is "
        f"{target.version} (its TensorRT bindings exist only for that Python)",
        where=where,
        hint=hint,
    )


def _pip(*args: str | Path, step: str) -> str:
    return run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], step=step)


def _target_flags(target: PythonTarget) -> list[str]:
    return [
        "--only-binary=:all:",
        *(f"--platform={platform}" for platform in target.platforms),
        f"--python-version={target.version}",
        "--implementation=cp",
        f"--abi=cp{target.nodot}",
    ]


def dependencies_key(target: PythonTarget, wanted: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    inputs = [*wanted, *target.constraints, *INSTALLER, *SOURCE_ONLY, *_target_flags(target)]
    digest.update("\n".join(inputs).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:20]


def _dependencies(target: PythonTarget, cache_dir: Path) -> Path:
    """The dependency wheels for ``target``: from the cache, or downloaded into it (into a
    scratch folder renamed into place, so an interrupted download leaves nothing)."""
    wanted = requirements()
    folder = cache_dir / "jetson-wheels" / f"cp{target.nodot}-{target.glibc}"
    done = folder / dependencies_key(target, wanted)
    if done.is_dir():
        logger.info("Jetson wheels for Python %s from the cache: %s", target.version, done)
        return done
    shutil.rmtree(folder, ignore_errors=True)  # one set per target is kept: the current one
    scratch = folder / "downloading"
    scratch.mkdir(parents=True)
    for name in SOURCE_ONLY:
        _pip("wheel", "--no-deps", "-q", "-w", scratch, name, step=f"build {name} as a wheel")
    _pip(
        "download",
        "-q",
        *_target_flags(target),
        "--find-links",
        scratch,
        "-d",
        scratch,
        *wanted,
        *target.constraints,
        *INSTALLER,
        step=f"download the wheels for Python {target.version} on aarch64",
    )
    scratch.rename(done)
    return done


def build_wheelhouse(target: PythonTarget, cache_dir: Path, wheelhouse: Path) -> Path:
    """``wheelhouse`` filled for ``target``: this repo's wheel and every dependency, checked.

    Returns this repo's wheel. Raises ``JetsonTargetError`` before any download when the
    application does not support the target's Python, and after it when a wheel's tags do not
    fit the target."""
    if wheelhouse.exists():
        shutil.rmtree(wheelhouse)
    wheelhouse.mkdir(parents=True)
    app_wheel = build_device_wheel(wheelhouse)
    check_application_fits(app_wheel, target, where="pyproject.toml: requires-python")
    for wheel in _dependencies(target, cache_dir).glob("*.whl"):
        shutil.copy2(wheel, wheelhouse / wheel.name)
    wrong = wrong_tags(wheelhouse, target)
    if wrong:
        raise JetsonTargetError(
            f"{len(wrong)} wheel(s) do not fit CPython {target.version} on aarch64 with glibc "
            f"{target.glibc}: {'; '.join(wrong)}",
            where=str(wheelhouse),
            hint="pin a version of each that ships a wheel for this target",
        )
    return app_wheel


def install_requirement() -> str:
    """What the flash step asks pip to install from the wheelhouse."""
    return f"moltbot-edge[{','.join(EXTRAS)}]"
