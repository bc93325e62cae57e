"""`moltbot image jetson-bundle --update-keys DIR`: the plant's CA goes to the bundle's build,
and a folder without keys is refused before anything is built."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import images.jetson
from images.build import BuildReport, update_signing
from images.cli import image
from images.update_keys import KEYRING_NAME, init_keys

REPO = Path(__file__).parents[2]
ORIN_RECIPE = REPO / "images/recipes/jetson-agx-orin.yaml"


@pytest.fixture
def built_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path | None]:
    """Stands in for the bundle build (wheelhouse and tarball take minutes): records the keyring
    the real key lookup gives for what the command passed."""
    seen: dict[str, Path | None] = {}

    def build(
        recipe: Path, out_dir: Path, cache_dir: Path, *, update_keys: Path | None = None
    ) -> BuildReport:
        seen["keyring"] = update_signing(update_keys, cache_dir).keyring
        bundle = out_dir / "jetson-agx-orin-appliance"
        bundle.mkdir(parents=True)
        return BuildReport(bundle / "appliance-overlay.tar.zst", "0" * 64)

    monkeypatch.setattr(images.jetson, "build_jetson_bundle", build)
    return seen


@pytest.mark.skipif(shutil.which("openssl") is None, reason="making keys needs openssl")
def test_the_bundle_trusts_the_ca_in_the_update_keys_folder(
    built_with: dict[str, Path | None], tmp_path: Path
) -> None:
    plant = tmp_path / "plant-keys"
    init_keys(plant)
    result = CliRunner().invoke(
        image,
        ["jetson-bundle", str(ORIN_RECIPE), "--out", str(tmp_path / "out"),
         "--cache", str(tmp_path / "cache"), "--update-keys", str(plant)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert built_with["keyring"] == plant / KEYRING_NAME
    assert not (tmp_path / "cache" / "update-keys").exists()  # no development keys made


def test_an_update_keys_folder_without_keys_is_refused_with_what_to_do(
    built_with: dict[str, Path | None], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        image,
        ["jetson-bundle", str(ORIN_RECIPE), "--out", str(tmp_path / "out"),
         "--update-keys", str(empty)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "keyring" not in built_with
    message = str(result.exception) + result.output
    assert "moltbot image keys init" in message, message
