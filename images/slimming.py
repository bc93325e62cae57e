"""Cut what an appliance never uses from the unpacked root file system: documentation, message
translations, and kernel modules for hardware its board cannot have.

Runs on the unpacked tree, after the cached rootfs stage: changing what is cut never rebuilds the
root file system. Licences stay (each package's ``copyright``), and a dpkg configuration file
keeps packages that apt installs later on the device just as slim.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from images.paths import REPO_ROOT
from images.run import ToolError, require, run
from images.tree_sizes import tree_bytes

logger = logging.getLogger(__name__)

DPKG_EXCLUDES = REPO_ROOT / "images" / "dpkg"
DOC_DIRS = ("usr/share/man", "usr/share/info", "usr/share/lintian", "usr/share/doc-base")
LOCALE_DIR = Path("usr/share/locale")
KEPT_LOCALE_FILES = frozenset({"locale.alias"})
MODULES_DIR = Path("usr/lib/modules")


class SlimmingError(ToolError):
    """What the board profile asks to cut would break what stays."""


@dataclass(frozen=True)
class SlimOptions:
    docs: bool
    locales: bool
    kernel_modules: bool
    # Folders under lib/modules/<version>/kernel/ (the board's profile lists them).
    unused_module_dirs: tuple[str, ...] = ()


def slim_rootfs(root: Path, options: SlimOptions) -> dict[str, int]:
    """Cut what ``options`` asks for; returns the bytes removed, by what was cut."""
    removed: dict[str, int] = {}
    if options.docs:
        removed["docs"] = _cut_docs(root)
        _install_dpkg_excludes(root, "slim-docs.cfg")
    if options.locales:
        removed["locales"] = _cut_locales(root)
        _install_dpkg_excludes(root, "slim-locales.cfg")
    if options.kernel_modules and options.unused_module_dirs:
        removed["kernel_modules"] = _cut_modules(root, options.unused_module_dirs)
    for what, size in removed.items():
        logger.info("slimmed %s: %.1f MiB", what, size / 2**20)
    return removed


def _remove(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        size = 0 if path.is_symlink() else path.lstat().st_size
        path.unlink()
        return size
    if path.is_dir():
        size = tree_bytes(path)
        shutil.rmtree(path)
        return size
    return 0


def _cut_docs(root: Path) -> int:
    """Everything under /usr/share/doc but each package's copyright; man, info, lintian."""
    removed = sum(_remove(root / folder) for folder in DOC_DIRS)
    doc = root / "usr/share/doc"
    if doc.is_dir():
        for package in sorted(doc.iterdir()):
            if package.is_symlink():  # a package whose docs (and copyright) live in another's
                continue
            if not package.is_dir():
                removed += _remove(package)
                continue
            for entry in sorted(package.iterdir()):
                if entry.name != "copyright":
                    removed += _remove(entry)
    for folder in ("usr/share/man", "usr/share/info"):
        (root / folder).mkdir(parents=True, exist_ok=True)  # some maintainer scripts expect them
    return removed


def _cut_locales(root: Path) -> int:
    folder = root / LOCALE_DIR
    if not folder.is_dir():
        return 0
    return sum(
        _remove(entry) for entry in sorted(folder.iterdir()) if entry.name not in KEPT_LOCALE_FILES
    )


def _cut_modules(root: Path, unused: tuple[str, ...]) -> int:
    """Remove the listed module folders of every installed kernel, then rebuild modules.dep so
    modprobe does not look for what is gone."""
    removed = 0
    versions = sorted(p for p in (root / MODULES_DIR).glob("*") if (p / "kernel").is_dir())
    for version in versions:
        _check_nothing_kept_needs(version, unused)
        for relative in unused:
            removed += _remove(version / "kernel" / relative)
        run(
            [require("depmod"), "-b", root, version.name],
            step=f"rebuild modules.dep for kernel {version.name}",
        )
    return removed


def _check_nothing_kept_needs(version: Path, unused: tuple[str, ...]) -> None:
    """Refuse to cut a module that a kept module needs (read from the kernel's own
    modules.dep): the kept one would fail to load on the device, long after the build."""
    dep_file = version / "modules.dep"
    if not dep_file.is_file():
        return
    prefixes = tuple(f"kernel/{relative.strip('/')}" for relative in unused)

    def cut(module: str) -> bool:
        return any(module == p or module.startswith(f"{p}/") for p in prefixes)

    broken: dict[str, list[str]] = {}
    for line in dep_file.read_text().splitlines():
        module, _, needs = line.partition(":")
        if not cut(module):
            missing = sorted(need for need in needs.split() if cut(need))
            if missing:
                broken[module] = missing
    if broken:
        shown = "; ".join(f"{module} needs {', '.join(needs)}" for module, needs in broken.items())
        folders = sorted({str(Path(module).parent.relative_to("kernel")) for module in broken})
        raise SlimmingError(
            f"kernel {version.name}: kept modules need modules the board profile lists as "
            f"unused: {shown}",
            where="kernel_modules_unused in the board profile (hw/)",
            hint=f"also list {', '.join(folders)} there, or keep the folders they need",
        )


def _install_dpkg_excludes(root: Path, name: str) -> None:
    target = root / "etc/dpkg/dpkg.cfg.d" / f"moltbot-{name.removesuffix('.cfg')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DPKG_EXCLUDES / name, target)
    target.chmod(0o644)
