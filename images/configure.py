"""``moltbot image configure``: the site file into a built image's boot partition, in place.

No root, no mount, no rebuild: mtools writes ``moltbot/site.yaml`` into the FAT partition at
its offset. The site file is validated against the config model first; a bad one changes
nothing. Batch mode makes one configured image per inventory row and a ledger that traces each
unit to what was flashed (never the secrets themselves).
"""

from __future__ import annotations

import csv
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge.config.loading import load_config, read_config_file
from edge.errors import InputError
from edge.files import sha256_file
from images.disk import fat_offset
from images.run import run

SITE_PATH = "moltbot/site.yaml"
INVENTORY_COLUMNS = ("device_id", "name")


def validate_site(tree: dict[str, Any], where: Path) -> None:
    scratch = where.with_name(f".{where.name}.check.yaml")
    scratch.write_text(yaml.safe_dump(tree, allow_unicode=True))
    try:
        load_config(config_file=scratch, environ={}, system_file=Path("/nonexistent"))
    finally:
        scratch.unlink(missing_ok=True)


def _image_target(image: Path) -> str:
    return f"{image}@@{fat_offset(image)}"


def write_site(image: Path, tree: dict[str, Any]) -> None:
    target = _image_target(image)
    staging = image.with_name(f".{image.name}.site.yaml")
    staging.write_text(
        "# written by moltbot image configure\n"
        + yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)
    )
    try:
        existing = run(["mdir", "-b", "-i", target, "::"], step="list the boot partition")
        if "::/moltbot" not in existing:
            run(["mmd", "-i", target, "::moltbot"], step="create moltbot/ on the boot partition")
        run(["mcopy", "-o", "-i", target, staging, f"::{SITE_PATH}"], step="write the site file")
    finally:
        staging.unlink(missing_ok=True)


def read_site(image: Path) -> str:
    return run(
        ["mtype", "-i", _image_target(image), f"::{SITE_PATH}"], step="read the site file back"
    )


def configure_image(image: Path, site_file: Path) -> None:
    if not image.is_file():
        raise InputError("image not found", where=str(image), hint="build it with make image")
    tree = read_config_file(site_file)
    validate_site(tree, site_file)  # raises ConfigError naming the field; nothing written
    write_site(image, tree)


@dataclass(frozen=True)
class LedgerRow:
    row: int
    device_id: str
    image: str
    image_sha256: str
    manifest_sha256: str
    api_token_sha256: str


def configure_batch(
    image: Path, site_file: Path | None, inventory: Path, out: Path
) -> list[LedgerRow]:
    base = read_config_file(site_file) if site_file else {}
    rows = _read_inventory(inventory)
    manifest = image.with_name("manifest.json")
    manifest_digest = sha256_file(manifest) if manifest.is_file() else "none"
    trees = []
    for number, row in enumerate(rows, 1):  # validate everything before writing anything
        tree = _merge(base, _row_settings(row))
        validate_site(tree, inventory.with_name(f"{inventory.name}-row{number}.yaml"))
        trees.append(tree)
    out.mkdir(parents=True, exist_ok=True)
    ledger = []
    for number, (row, tree) in enumerate(zip(rows, trees, strict=True), 1):
        unit_image = out / f"{row['device_id']}.img"
        run(["cp", "--sparse=always", image, unit_image], step=f"copy the image for row {number}")
        write_site(unit_image, tree)
        token = tree["api"]["token"]
        ledger.append(
            LedgerRow(
                number,
                row["device_id"],
                unit_image.name,
                sha256_file(unit_image),
                manifest_digest,
                hashlib.sha256(token.encode()).hexdigest(),
            )
        )
    with (out / "ledger.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(LedgerRow.__dataclass_fields__)
        writer.writerows([[getattr(r, f) for f in LedgerRow.__dataclass_fields__] for r in ledger])
    os.chmod(out / "ledger.csv", 0o640)
    return ledger


def _read_inventory(inventory: Path) -> list[dict[str, str]]:
    with inventory.open(newline="") as stream:
        reader = csv.DictReader(stream)
        missing = [c for c in INVENTORY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(
                f"inventory lacks columns {missing}",
                where=str(inventory),
                hint="columns: device_id, name[, broker_username, broker_password, api_token]",
            )
        rows = list(reader)
    ids = [row["device_id"] for row in rows]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(
            f"duplicate device ids {duplicates}",
            where=str(inventory),
            hint="every unit needs its own device_id",
        )
    return rows


def _row_settings(row: dict[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "device": {"id": row["device_id"], "name": row["name"]},
        "api": {"token": row.get("api_token") or secrets.token_urlsafe(32)},
    }
    if row.get("broker_username"):
        settings["uplink"] = {
            "username": row["broker_username"],
            "password": row.get("broker_password", ""),
        }
    return settings


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = {
        key: (dict(value) if isinstance(value, dict) else value) for key, value in base.items()
    }
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged
