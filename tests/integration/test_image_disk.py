"""Disk images without loop devices, checked with the real tools; site config in place."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from edge.errors import ConfigError
from images.configure import configure_batch, configure_image, read_site
from images.disk import (
    assemble,
    build_ext4,
    build_vfat,
    copy_data_ranges,
    plan_layout,
    read_table,
)
from images.recipe import RecipeError, load_recipe, recipe_hash

pytestmark = pytest.mark.image
REPO = Path(__file__).parents[2]


def small_disk(tmp_path: Path) -> tuple[Path, object]:
    layout = plan_layout("test-seed", boot_mib=40, root_mib=24, data_mib=16)
    boot, root, data = (tmp_path / name for name in ("bootfs", "rootfs", "datafs"))
    for folder in (boot, root / "etc", data / "outbox"):
        folder.mkdir(parents=True)
    (boot / "config.txt").write_text("arm_64bit=1\n")
    (boot / "cmdline.txt").write_text(f"root=PARTUUID={layout.partuuid('root')} rootwait\n")
    (root / "etc" / "hostname").write_text("moltbot\n")
    for path in (*boot.rglob("*"), *root.rglob("*"), *data.rglob("*")):
        os.utime(path, (1_700_000_000, 1_700_000_000))
    images = {
        "boot": tmp_path / "boot.img",
        "root": tmp_path / "root.img",
        "data": tmp_path / "data.img",
    }
    build_vfat(images["boot"], layout.partition("boot"), boot, "test-seed")
    build_ext4(images["root"], layout.partition("root"), root, "test-seed", 0)
    build_ext4(images["data"], layout.partition("data"), data, "test-seed", 0)
    disk = tmp_path / "disk.img"
    assemble(disk, layout, images)
    return disk, layout


def test_disk_has_the_planned_table_and_clean_file_systems(tmp_path: Path) -> None:
    disk, layout = small_disk(tmp_path)
    table = read_table(disk)
    assert table["label"] == "dos"
    assert table["id"] == f"0x{layout.disk_id:08x}"  # type: ignore[attr-defined]
    types = [p["type"] for p in table["partitions"]]  # type: ignore[index]
    assert types == ["c", "83", "83", "83"]
    for name, part in (("boot", 0), ("root", 1), ("root_b", 2), ("data", 3)):
        entry = table["partitions"][part]  # type: ignore[index]
        planned = layout.partition(name)  # type: ignore[attr-defined]
        assert entry["start"] * 512 == planned.start_mib * 1024 * 1024
    subprocess.run(["fsck.vfat", "-n", str(tmp_path / "boot.img")], check=True, capture_output=True)
    for name in ("root", "data"):
        subprocess.run(
            ["e2fsck", "-fn", str(tmp_path / f"{name}.img")], check=True, capture_output=True
        )
    cmdline = subprocess.run(
        ["mtype", "-i", f"{disk}@@{4 * 1024 * 1024}", "::cmdline.txt"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"root=PARTUUID={layout.partuuid('root')}" in cmdline  # type: ignore[attr-defined]


def test_same_inputs_give_the_same_disk_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two assemblies of the same trees, in different seconds and folders, are byte-identical:
    with SOURCE_DATE_EPOCH mkfs.vfat/mtools run at a frozen instant (libfaketime -f) and
    mke2fs >= 1.47.1 stamps every inode with it (the staged files' own change times, which no
    user can set, no longer leak in); UUIDs and disk ids come from the recipe."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first, _ = small_disk(tmp_path / "a")
    time.sleep(2.1)  # builds in different wall-clock seconds (FAT stores 2 s steps)
    second, _ = small_disk(tmp_path / "b")
    one, two = first.read_bytes(), second.read_bytes()
    assert len(one) == len(two)
    differing = [i for i, (a, b) in enumerate(zip(one, two, strict=True)) if a != b]
    assert not differing, f"{len(differing)} bytes differ, the first at offset {differing[0]}"
    assert hashlib.sha256(one).hexdigest() == hashlib.sha256(two).hexdigest()


def test_configure_writes_the_site_file_and_reads_back(tmp_path: Path) -> None:
    disk, _ = small_disk(tmp_path)
    site = tmp_path / "site.yaml"
    site.write_text(
        "device:\n  name: line 3 camera\nuplink:\n  host: broker.plant.local\n"
        "  port: 8883\nsystem:\n  wifi_ssid: plant\n  wifi_psk: s3cret\n"
    )
    configure_image(disk, site)
    assert "broker.plant.local" in read_site(disk)
    site.write_text("uplink:\n  host: other\n")
    configure_image(disk, site)  # overwrite in place
    assert "other" in read_site(disk)


def test_bad_site_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    disk, _ = small_disk(tmp_path)
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    bad = tmp_path / "bad.yaml"
    bad.write_text("uplink:\n  port: 99999\n")
    with pytest.raises(ConfigError, match=r"uplink\.port"):
        configure_image(disk, bad)
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before


def test_batch_personalisation_writes_one_image_per_unit_and_a_ledger(tmp_path: Path) -> None:
    disk, _ = small_disk(tmp_path)
    inventory = tmp_path / "units.csv"
    inventory.write_text(
        "device_id,name,broker_username,broker_password\n"
        "line3-cam1,Line 3 cam 1,cam1,pw-one\nline3-cam2,Line 3 cam 2,cam2,pw-two\n"
    )
    ledger = configure_batch(disk, None, inventory, tmp_path / "units")
    assert [row.device_id for row in ledger] == ["line3-cam1", "line3-cam2"]
    assert "line3-cam2" in read_site(tmp_path / "units" / "line3-cam2.img")
    with (tmp_path / "units" / "ledger.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [r["device_id"] for r in rows] == ["line3-cam1", "line3-cam2"]
    text = (tmp_path / "units" / "ledger.csv").read_text()
    assert "pw-one" not in text  # secrets never reach the ledger
    assert all(len(r["api_token_sha256"]) == 64 for r in rows)


def test_recipes_fail_fast_naming_the_field(tmp_path: Path) -> None:
    recipe, board = load_recipe(REPO / "images" / "recipes" / "rpi4b.yaml", base_dir=REPO)
    assert board.name == "rpi4b"
    assert len(recipe_hash(recipe)) == 64
    cases = {
        "name: x\nboard: rpi5\n": "unknown board 'rpi5'",
        "name: x\nboard: rpi4b\nmodels:\n  - path: models/nope/1\n": r"models\[0\]\.path",
        "name: x\nboard: [\n": "not valid YAML",
        "name: x\nboard: rpi4b\nhostnme: a\n": "hostnme",
    }
    for text, message in cases.items():
        path = tmp_path / "r.yaml"
        path.write_text(text)
        with pytest.raises(RecipeError, match=message):
            load_recipe(path, base_dir=REPO)


def test_outputs_carry_every_component_and_a_valid_cyclonedx_sbom(tmp_path: Path) -> None:
    import json

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from images.outputs import build_manifest, debian_packages, models, wheels, write_outputs
    from tests.support.models import installed_registry

    disk, _ = small_disk(tmp_path)
    rootfs = tmp_path / "rootfs"
    (rootfs / "var/lib/dpkg").mkdir(parents=True)
    (rootfs / "var/lib/dpkg/status").write_text(
        "Package: python3\nStatus: install ok installed\nVersion: 3.11.2-1+b1\n\n"
        "Package: removed-thing\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: systemd\nStatus: install ok installed\nVersion: 252.39-1~deb12u2\n"
    )
    site = rootfs / "opt/moltbot/venv/lib/python3.11/site-packages"
    (site / "numpy-2.4.6.dist-info").mkdir(parents=True)
    (site / "numpy-2.4.6.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: numpy\nVersion: 2.4.6\n\nbody\n"
    )
    installed_registry(tmp_path / "data/models")
    components = [*debian_packages(rootfs), *wheels(site), *models(tmp_path / "data/models")]
    manifest = build_manifest("ab" * 32, components, disk, epoch=1_700_000_000)
    assert [p["name"] for p in manifest["debian_packages"]] == ["python3", "systemd"]
    assert manifest["wheels"] == [
        {"kind": "wheel", "name": "numpy", "version": "2.4.6", "sha256": None}
    ]
    assert {m["name"] for m in manifest["models"]} == {"defect-fp32", "defect-int8"}
    produced = write_outputs(disk, manifest, "test-seed")
    assert {p.name for p in produced} == {
        "disk.img",
        "disk.img.xz",
        "disk.img.bmap",
        "manifest.json",
        "sbom.cdx.json",
        "SHA256SUMS",
    }
    subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, check=True, capture_output=True)
    sbom = (tmp_path / "sbom.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom) is None
    assert len(json.loads(sbom)["components"]) == 5


def test_assembled_disk_holds_each_partition_byte_for_byte_and_stays_sparse(
    tmp_path: Path,
) -> None:
    disk, layout = small_disk(tmp_path)
    with disk.open("rb") as stream:
        for name in ("boot", "root", "data"):  # root_b ships empty
            part = tmp_path / f"{name}.img"
            stream.seek(layout.partition(name).start_mib * 1024 * 1024)  # type: ignore[attr-defined]
            assert stream.read(part.stat().st_size) == part.read_bytes(), name
    allocated = disk.stat().st_blocks * 512
    files = sum(
        (tmp_path / f"{name}.img").stat().st_blocks * 512 for name in ("boot", "root", "data")
    )
    assert allocated <= files + 1024 * 1024, (allocated, files)
    assert allocated < disk.stat().st_size // 2
    slot_b = layout.partition("root_b")  # type: ignore[attr-defined]
    with disk.open("rb") as stream:
        stream.seek(slot_b.start_mib * 1024 * 1024)
        assert stream.read(slot_b.size_mib * 1024 * 1024) == bytes(slot_b.size_mib * 1024 * 1024)


def test_copy_keeps_holes_between_data_runs(tmp_path: Path) -> None:
    source = tmp_path / "holey.part"
    with source.open("wb") as stream:
        stream.truncate(8 * 1024 * 1024)
        stream.seek(4096)
        stream.write(b"a" * 4096)
        stream.seek(5 * 1024 * 1024)
        stream.write(b"b" * 10_000)
    target = tmp_path / "disk"
    with target.open("wb") as stream:
        stream.truncate(16 * 1024 * 1024)
    with target.open("r+b") as stream:
        copy_data_ranges(source, stream.fileno(), 1024 * 1024)
    data = target.read_bytes()
    assert data[1024 * 1024 : 9 * 1024 * 1024] == source.read_bytes()
    assert data[: 1024 * 1024] == bytes(1024 * 1024)
    assert target.stat().st_blocks * 512 <= 64 * 1024
