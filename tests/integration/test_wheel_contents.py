"""The wheel that images and fleet projects install holds every module of the runtime.

A package folder without ``__init__.py`` once went missing from the wheel built in a clean
clone (while a stale in-tree build/ folder hid it locally): the image booted into
``ModuleNotFoundError: edge.api``. This pins both halves of that bug.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from images.app import build_own_wheel

REPO = Path(__file__).parents[2]
PACKAGES = ("edge", "images", "hw")


def source_modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for module in (REPO / package).rglob("*.py"):
            relative = module.relative_to(REPO)
            if not {"cache", "out", "__pycache__"} & set(relative.parts):
                found.add(relative.as_posix())
    return found


def test_every_package_folder_is_a_regular_package() -> None:
    folders = {Path(module).parent for module in source_modules()}
    missing = sorted(str(f) for f in folders if not (REPO / f / "__init__.py").is_file())
    assert missing == [], f"add an __init__.py to {missing}"


def test_wheel_holds_every_module_and_the_units(tmp_path: Path) -> None:
    stale = REPO / "build" / "lib" / "edge" / "stale_module_from_an_old_build.py"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("raise SystemExit('stale')\n")
    try:
        wheel = build_own_wheel(tmp_path)
    finally:
        stale.unlink()
    names = set(zipfile.ZipFile(wheel).namelist())
    assert source_modules() - names == set()
    assert "edge/stale_module_from_an_old_build.py" not in names
    for unit in ("moltbot.service", "moltbot-setup.service", "moltbot-selftest.service"):
        assert f"edge/units/{unit}" in names
    assert "edge/units/jetson/tegra-gpu.conf" in names
    assert "images/jetson_flash.sh" in names
