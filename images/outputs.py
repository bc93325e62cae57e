"""What a build hands over: the image, ``.img.xz``, ``.bmap``, ``SHA256SUMS``, ``manifest.json``
(recipe hash, every Debian package, wheel and model with its sha256, build time, builder
version) and the same inventory as a CycloneDX JSON SBOM."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge import __version__
from edge.files import sha256_file
from images.run import require, run


@dataclass(frozen=True)
class Component:
    kind: str  # deb, wheel, model
    name: str
    version: str
    sha256: str | None = None


def debian_packages(rootfs: Path) -> list[Component]:
    """Installed packages read from the rootfs's dpkg database (no chroot needed)."""
    status = rootfs / "var/lib/dpkg/status"
    if not status.is_file():
        return []
    packages: list[Component] = []
    current: dict[str, str] = {}
    for line in [*status.read_text(errors="replace").splitlines(), ""]:
        if not line.strip():
            if current.get("Status", "").endswith(" installed"):
                packages.append(Component("deb", current["Package"], current.get("Version", "")))
            current = {}
        elif not line.startswith(" ") and ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    return sorted(packages, key=lambda c: c.name)


def wheels(site_packages: Path) -> list[Component]:
    found = []
    for dist_info in sorted(site_packages.glob("*.dist-info")):
        fields: dict[str, str] = {}
        metadata = dist_info / "METADATA"
        if metadata.is_file():
            for line in metadata.read_text(errors="replace").splitlines():
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key, value.strip())
        if "Name" in fields:
            found.append(Component("wheel", fields["Name"], fields.get("Version", "")))
    return found


def models(model_root: Path) -> list[Component]:
    found = []
    for manifest_path in sorted(model_root.glob("*/*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        for precision, variant in sorted(manifest["variants"].items()):
            path = manifest_path.parent / variant["file"]
            found.append(
                Component(
                    "model",
                    f"{manifest['name']}-{precision}",
                    manifest["version"],
                    sha256_file(path),
                )
            )
    return found


def build_manifest(
    recipe_sha256: str, components: list[Component], image: Path, epoch: int | None = None
) -> dict[str, Any]:
    built = datetime.fromtimestamp(epoch, UTC) if epoch is not None else datetime.now(UTC)
    return {
        "image": image.name,
        "recipe_sha256": recipe_sha256,
        "builder_version": __version__,
        "built_at": built.isoformat(timespec="seconds"),
        "debian_packages": [asdict(c) for c in components if c.kind == "deb"],
        "wheels": [asdict(c) for c in components if c.kind == "wheel"],
        "models": [asdict(c) for c in components if c.kind == "model"],
    }


def cyclonedx_sbom(manifest: dict[str, Any], seed: str) -> dict[str, Any]:
    def component(entry: dict[str, Any], purl: str, kind: str) -> dict[str, Any]:
        item: dict[str, Any] = {
            "type": kind,
            "name": entry["name"],
            "version": entry["version"],
            "purl": purl,
            "bom-ref": purl,
        }
        if entry.get("sha256"):
            item["hashes"] = [{"alg": "SHA-256", "content": entry["sha256"]}]
        return item

    components = (
        [
            component(e, f"pkg:deb/debian/{e['name']}@{e['version']}?arch=arm64", "library")
            for e in manifest["debian_packages"]
        ]
        + [
            component(e, f"pkg:pypi/{e['name'].lower()}@{e['version']}", "library")
            for e in manifest["wheels"]
        ]
        + [
            component(
                e, f"pkg:generic/moltbot-model/{e['name']}@{e['version']}", "machine-learning-model"
            )
            for e in manifest["models"]
        ]
    )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'moltbot-sbom:' + seed)}",
        "metadata": {
            "timestamp": manifest["built_at"],
            "component": {
                "type": "firmware",
                "name": manifest["image"],
                "version": manifest["builder_version"],
                "bom-ref": "moltbot-image",
            },
        },
        "components": components,
    }


# xz preset for the .img.xz. Measured on this image's root partition (300 MiB, 2 cores, same
# run): -1 takes 0.30x the time of -3 for a 5 % larger file; -0 0.20x for 10 % larger. The build
# spends most of a cached rebuild here, so -1 by default; `--xz-level 6` for a smallest release.
DEFAULT_XZ_LEVEL = 1


def write_outputs(
    image: Path,
    manifest: dict[str, Any],
    seed: str,
    *,
    compress: bool = True,
    xz_level: int = DEFAULT_XZ_LEVEL,
    extra: list[Path] | None = None,
) -> list[Path]:
    """``.bmap``, ``.img.xz`` (unless ``compress`` is off), ``manifest.json``, ``sbom.cdx.json``
    and ``SHA256SUMS``."""
    out = image.parent
    bmap = image.with_name(f"{image.name}.bmap")
    run(["bmaptool", "create", "-o", bmap, image], step="create the block map")
    compressed = image.with_name(f"{image.name}.xz")
    compressed.unlink(missing_ok=True)
    if compress:
        partial = compressed.with_suffix(".xz.partial")
        with partial.open("wb") as stream:
            subprocess.run(  # noqa: S603 - fixed argv
                [require("xz"), "-T0", f"-{xz_level}", "-c", str(image)],
                stdout=stream,
                check=True,
                env=os.environ | {"LC_ALL": "C"},
            )
        partial.replace(compressed)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "sbom.cdx.json").write_text(json.dumps(cyclonedx_sbom(manifest, seed), indent=2))
    produced = [image, bmap, out / "manifest.json", out / "sbom.cdx.json"]
    if compress:
        produced.insert(1, compressed)
    produced += extra or []
    (out / "SHA256SUMS").write_text(
        "".join(f"{sha256_file(path)}  {path.name}\n" for path in produced)
    )
    return [*produced, out / "SHA256SUMS"]
