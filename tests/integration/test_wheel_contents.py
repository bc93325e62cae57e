"""The wheel that images, fleet projects and Jetson bundles install holds every module of the
runtime, and not the image builder.

A package folder without ``__init__.py`` once went missing from the wheel built in a clean
clone (while a stale in-tree build/ folder hid it locally): the image booted into
``ModuleNotFoundError: edge.api``. This pins both halves of that bug. A device runs ``edge``
with ``hw``'s board profiles; ``images`` (the builder) stays on the host.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from images.app import build_device_wheel

REPO = Path(__file__).parents[2]
PACKAGES = ("edge", "images", "hw")
DEVICE_PACKAGES = ("edge", "hw")


def source_modules(packages: tuple[str, ...] = PACKAGES) -> set[str]:
    found = set()
    for package in packages:
        for module in (REPO / package).rglob("*.py"):
            relative = module.relative_to(REPO)
            if not {"cache", "out", "__pycache__"} & set(relative.parts):
                found.add(relative.as_posix())
    return found


@pytest.fixture(scope="module")
def device_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The device wheel, built while a stale module sits in an old build/ folder."""
    stale = REPO / "build" / "lib" / "edge" / "stale_module_from_an_old_build.py"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("raise SystemExit('stale')\n")
    try:
        return build_device_wheel(tmp_path_factory.mktemp("wheels"))
    finally:
        stale.unlink()


def names_in(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_every_package_folder_is_a_regular_package() -> None:
    folders = {Path(module).parent for module in source_modules()}
    missing = sorted(str(f) for f in folders if not (REPO / f / "__init__.py").is_file())
    assert missing == [], f"add an __init__.py to {missing}"


def test_device_wheel_holds_every_runtime_module_and_the_units(device_wheel: Path) -> None:
    names = names_in(device_wheel)
    modules = source_modules(DEVICE_PACKAGES)
    assert {m.split("/")[0] for m in modules} == set(DEVICE_PACKAGES)
    assert modules - names == set()
    assert "edge/stale_module_from_an_old_build.py" not in names
    for unit in ("moltbot.service", "moltbot-setup.service", "moltbot-selftest.service"):
        assert f"edge/units/{unit}" in names
    assert "edge/units/jetson/tegra-gpu.conf" in names
    assert any(n.startswith("hw/") and n.endswith(".yaml") for n in names), "board profiles"


def test_device_wheel_leaves_the_image_builder_out(device_wheel: Path) -> None:
    names = names_in(device_wheel)
    assert sorted(n for n in names if n.startswith(("images/", "balena/"))) == []
    with zipfile.ZipFile(device_wheel) as archive:
        info = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert archive.read(info).decode().split() == sorted(DEVICE_PACKAGES)
