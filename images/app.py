"""The application stage: this repo's package and its aarch64 wheels in a venv on the rootfs.

No emulation here: wheels are resolved on the host for the target (cp311, manylinux aarch64),
installed with ``pip --target`` into a venv laid out by hand (what ``python3 -m venv
--without-pip`` would write on the device), and byte-compiled on the host (same 3.11 bytecode,
unchecked hashes so nothing is rewritten on a read-only root). ``srt``, which ``vosk`` needs,
ships only as a source archive: it is built here into a pure-Python wheel first.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edge.files import sha256_file
from images.paths import REPO_ROOT
from images.run import run

logger = logging.getLogger(__name__)

VENV = Path("opt/moltbot/venv")
TARGET_PYTHON = "3.11"
# Debian 12 has glibc 2.36: every manylinux tag up to it fits (pip does not expand them itself).
TARGET_GLIBC_MINOR = 36
TARGET_PLATFORMS = (
    *(f"manylinux_2_{minor}_aarch64" for minor in range(TARGET_GLIBC_MINOR, 16, -1)),
    "manylinux2014_aarch64",
)
SOURCE_ONLY = ("srt",)
# Every image: voice (Vosk), USB cameras (OpenCV headless), Sparkplug B payloads (protobuf).
EXTRAS = ("voice", "camera", "sparkplug")


@dataclass(frozen=True)
class InstalledApp:
    site_packages: Path
    requirements: tuple[str, ...]


def requirements(extras: tuple[str, ...] = EXTRAS) -> tuple[str, ...]:
    """The runtime's dependencies (plus ``extras``) from pyproject.toml: one source of truth."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    found = list(project["dependencies"])
    for extra in extras:
        found += project["optional-dependencies"][extra]
    return tuple(found)


def _pip(*args: str | Path, step: str) -> str:
    return run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], step=step)


def _target_flags() -> list[str]:
    return [
        "--only-binary=:all:",
        *(f"--platform={platform}" for platform in TARGET_PLATFORMS),
        f"--python-version={TARGET_PYTHON}",
        "--implementation=cp",
        f"--abi=cp{TARGET_PYTHON.replace('.', '')}",
    ]


# Never copied into the wheel's build tree: caches, outputs, an old setuptools build/ folder
# (whose stale modules would otherwise land in the wheel), tests and benchmarks.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "cache",
    "out",
    "tests",
    "bench",
)
# Top-level packages a device does without: the builder. Devices get the runtime (edge) and the
# board profiles (hw). `moltbot image/flash/balena` come from the builder's `moltbot.commands`
# entry points; a device cannot import them, so there `moltbot` goes without those commands.
NOT_ON_DEVICE = frozenset({"images"})


def _not_device_source(folder: str, names: list[str]) -> set[str]:
    ignored = set(NOT_SOURCE(folder, names))
    if Path(folder) == REPO_ROOT:
        ignored |= NOT_ON_DEVICE.intersection(names)
    return ignored


def build_device_wheel(wheelhouse: Path) -> Path:
    """The wheel that images, fleet projects and Jetson bundles install: this repo's runtime
    without the builder, built from a clean copy of the source so it holds exactly the
    packages in the tree (setuptools reuses an in-tree build/ folder, stale files included)."""
    with tempfile.TemporaryDirectory(prefix="moltbot-wheel-") as scratch:
        source = Path(scratch) / "src"
        shutil.copytree(REPO_ROOT, source, ignore=_not_device_source, symlinks=True)
        _pip("wheel", "--no-deps", "-q", "-w", wheelhouse, source, step="build the moltbot wheel")
    return next(wheelhouse.glob("moltbot_edge-*.whl"))


def build_wheelhouse(wheelhouse: Path) -> tuple[str, ...]:
    """The device wheel of this repo, source-only dependencies as wheels, everything else
    downloaded for the target. Reused between builds (pip skips files already there)."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    for stale in wheelhouse.glob("moltbot_edge-*.whl"):
        stale.unlink()
    build_device_wheel(wheelhouse)
    wanted = requirements()
    for name in SOURCE_ONLY:
        if not list(wheelhouse.glob(f"{name}-*.whl")):
            _pip(
                "wheel", "--no-deps", "-q", "-w", wheelhouse, name, step=f"build {name} as a wheel"
            )
    _pip(
        "download",
        "-q",
        *_target_flags(),
        "--find-links",
        wheelhouse,
        "-d",
        wheelhouse,
        *wanted,
        step="download the aarch64 wheels",
    )
    return wanted


def install_application(root: Path, wheelhouse: Path) -> InstalledApp:
    """The venv at /opt/moltbot/venv inside ``root``, from ``wheelhouse`` only (no index).

    Two layers: the dependencies, installed and byte-compiled once per set of wheels and kept
    under ``<cache>/app-deps/<key>`` (an application change reuses them), then this repo's
    wheel on top."""
    wanted = build_wheelhouse(wheelhouse)
    venv = root / VENV
    if venv.exists():
        shutil.rmtree(venv)
    site = venv / "lib" / f"python{TARGET_PYTHON}" / "site-packages"
    _lay_out_venv(venv)
    cached = _dependencies_layer(wheelhouse, wanted)
    shutil.copytree(cached, site, symlinks=True)
    own_wheel = next(wheelhouse.glob("moltbot_edge-*.whl"))
    _pip(
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        *_target_flags(),
        "--no-compile",
        "--target",
        site,
        own_wheel,
        step="install the application into the image's venv",
    )
    _tidy_target(site)
    _byte_compile(site, [site / name for name in ("edge", "hw") if (site / name).is_dir()])
    entry = venv / "bin" / "moltbot"
    entry.write_text(
        f"#!/{VENV}/bin/python3\nimport sys\n\nfrom edge.cli import main\n\nsys.exit(main())\n"
    )
    entry.chmod(0o755)
    return InstalledApp(site, wanted)


def _lay_out_venv(venv: Path) -> None:
    """What ``python3 -m venv --without-pip`` writes on the device, written by hand."""
    (venv / "lib" / f"python{TARGET_PYTHON}").mkdir(parents=True)
    (venv / "lib64").symlink_to("lib")
    bin_dir = venv / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(f"/usr/bin/python{TARGET_PYTHON}")
    (bin_dir / "python3").symlink_to("python")
    (bin_dir / f"python{TARGET_PYTHON}").symlink_to("python")
    (venv / "pyvenv.cfg").write_text(
        "home = /usr/bin\n"
        "include-system-site-packages = false\n"
        f"version = {TARGET_PYTHON}\n"
        f"executable = /usr/bin/python{TARGET_PYTHON}\n"
    )


def dependencies_key(wheelhouse: Path, wanted: tuple[str, ...]) -> str:
    """What the dependency layer is made from: every wheel but this repo's (name + content),
    the requirements, the target and the code of this stage."""
    digest = hashlib.sha256()
    for wheel in sorted(wheelhouse.glob("*.whl")):
        if not wheel.name.startswith("moltbot_edge-"):
            digest.update(f"{wheel.name}\0{sha256_file(wheel)}\n".encode())
    digest.update("\n".join([*wanted, *_target_flags(), *EXTRAS]).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:24]


def _dependencies_layer(wheelhouse: Path, wanted: tuple[str, ...]) -> Path:
    """The installed, byte-compiled dependencies for ``wanted``: from the cache, or built into
    it (in a scratch folder renamed into place, so an interrupted build leaves nothing)."""
    layers = wheelhouse.parent / "app-deps"
    layer = layers / dependencies_key(wheelhouse, wanted)
    if (layer / "site-packages").is_dir():
        logger.info("application dependencies from the cache: %s", layer)
        return layer / "site-packages"
    for stale in layers.glob("*"):
        shutil.rmtree(stale, ignore_errors=True)  # one layer is kept: the current one
    scratch = Path(tempfile.mkdtemp(prefix="building-", dir=_made(layers)))
    site = scratch / "site-packages"
    _pip(
        "install",
        "-q",
        "--no-index",
        "--find-links",
        wheelhouse,
        *_target_flags(),
        "--no-compile",
        "--target",
        site,
        *wanted,
        step="install the application's dependencies",
    )
    _tidy_target(site)
    _byte_compile(site, [site])
    scratch.rename(layer)
    return layer / "site-packages"


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _tidy_target(site: Path) -> None:
    # pip --target writes console scripts with this host's interpreter; the venv has its own.
    shutil.rmtree(site / "bin", ignore_errors=True)
    normalise_records(site)


def _byte_compile(site: Path, folders: list[Path]) -> None:
    """Byte-compile ``folders`` (in ``site``) under the paths the device sees: the same .pyc
    whether compiled in the cache layer or in the image."""
    run(
        [
            sys.executable,
            "-m",
            "compileall",
            "-q",
            "-j0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            site,
            "-p",
            f"/{VENV}/lib/python{TARGET_PYTHON}/site-packages",
            *folders,
        ],
        step="byte-compile the application",
    )


def normalise_records(site: Path) -> None:
    """Make the installed metadata the same whoever builds it, and true to what is installed.

    ``direct_url.json`` records the wheel's path on the build host (PEP 610; for a wheel from a
    local wheelhouse it says nothing a device can use), and each RECORD lists the console
    scripts pip wrote outside site-packages with this host's interpreter in their shebang —
    files the image does not ship. Both go, and the RECORDs list what is there.
    """
    for record in sorted(site.glob("*.dist-info/RECORD")):
        info = record.parent
        (info / "direct_url.json").unlink(missing_ok=True)
        lines = record.read_text().splitlines()
        kept = [
            line
            for line in lines
            if not line.startswith("../") and not line.startswith(f"{info.name}/direct_url.json,")
        ]
        if kept != lines:
            record.write_text("\n".join(kept) + "\n")
