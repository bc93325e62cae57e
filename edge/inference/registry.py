"""The on-device model registry: ``{model_dir}/{name}/{version}/`` folders, an ``active`` and a
``previous`` pointer per model name (small text files replaced atomically), and ``refused.json``:
the versions whose activation was refused, with the reason. A refused version stays on disk
(for diagnosis) but is never chosen again: not as the newest, not as a rollback target, not
when activated by name; installing it again (fixed) clears the mark."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelRejectedError
from edge.files import write_text_atomically
from edge.inference.manifest import MANIFEST_FILE, ModelManifest, load_manifest
from edge.inference.verification import verify_folder

logger = logging.getLogger(__name__)
ACTIVE, PREVIOUS, REFUSED = "active", "previous", "refused.json"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    version: str
    active: bool
    precisions: tuple[str, ...]
    accuracy: dict[str, float | None]
    refused: str | None = None  # why its activation was refused


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name@version`` → (name, version); ``name`` alone → (name, None)."""
    name, _, version = ref.partition("@")
    if not NAME_PATTERN.fullmatch(name) or (version and not VERSION_PATTERN.fullmatch(version)):
        raise ModelRejectedError(
            f"bad model reference {ref!r}",
            where=ref,
            hint="write NAME@VERSION, e.g. defect@2 (letters, digits, '_', '-', '.'; no '/')",
        )
    return name, version or None


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str, version: str) -> Path:
        return self.root / name / version

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def versions(self, name: str) -> list[str]:
        base = self.root / name
        if not base.is_dir():
            return []
        found = [p.name for p in base.iterdir() if (p / MANIFEST_FILE).is_file()]
        return sorted(found, key=_version_sort_key)

    def _pointer(self, name: str, which: str) -> str | None:
        path = self.root / name / which
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            return None
        return value or None

    def refused(self, name: str) -> dict[str, str]:
        """Refused versions of ``name`` → why."""
        try:
            data = json.loads((self.root / name / REFUSED).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("cannot read %s: %s", self.root / name / REFUSED, exc)
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            str(k): str(v.get("reason", v)) if isinstance(v, dict) else str(v)
            for k, v in data.items()
        }

    def mark_refused(self, name: str, version: str, reason: str) -> None:
        path = self.root / name / REFUSED
        refused: dict[str, object] = dict(self.refused(name))
        refused[version] = {"reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_text_atomically(path, json.dumps(refused, indent=2) + "\n")
        logger.warning("%s@%s marked refused: %s", name, version, reason)

    def clear_refused(self, name: str, version: str) -> None:
        refused = self.refused(name)
        if version in refused:
            del refused[version]
            write_text_atomically(self.root / name / REFUSED, json.dumps(refused, indent=2) + "\n")

    def active(self, name: str) -> str | None:
        return self._pointer(name, ACTIVE)

    def previous(self, name: str) -> str | None:
        return self._pointer(name, PREVIOUS)

    def resolve(self, name: str, version: str | None) -> tuple[str, Path]:
        """The version to serve: the one asked for, else the active one, else the newest."""
        versions = self.versions(name)
        if not versions:
            raise ModelRejectedError(
                f"no model named {name!r} is installed",
                where=str(self.root / name),
                hint="install one with `moltbot model install FOLDER` (images ship the "
                "project's defect model)",
            )
        refused = self.refused(name)
        usable = [v for v in versions if v not in refused]
        active = self.active(name)
        chosen = version or (active if active in usable else None) or (usable or versions)[-1]
        if chosen not in versions:
            raise ModelRejectedError(
                f"{name}@{chosen} is not installed",
                where=str(self.root / name),
                hint=f"installed versions: {', '.join(versions)}",
            )
        if chosen in refused:
            raise ModelRejectedError(
                f"{name}@{chosen} was refused at an earlier activation: {refused[chosen]}",
                where=str(self.folder(name, chosen)),
                hint="install a fixed version (`moltbot model install FOLDER`; the same "
                "version number replaces the refused copy)"
                + (f"; usable versions: {', '.join(usable)}" if usable else ""),
            )
        return chosen, self.folder(name, chosen)

    def set_active(self, name: str, version: str, *, serving: str | None = None) -> None:
        """Point ``active`` at ``version``; ``previous`` at what was active (or ``serving``)."""
        current = self.active(name) or serving
        if current and current != version:
            write_text_atomically(self.root / name / PREVIOUS, current + "\n")
        write_text_atomically(self.root / name / ACTIVE, version + "\n")

    def rollback_target(self, name: str) -> str:
        previous = self.previous(name)
        if (
            previous is None
            or previous not in self.versions(name)
            or previous in self.refused(name)
        ):
            raise ModelRejectedError(
                f"{name} has no previous version to roll back to",
                where=str(self.root / name),
                hint="activate a version explicitly with NAME@VERSION",
            )
        return previous

    def install(self, source: Path) -> ModelManifest:
        """Verify a model folder and copy it in; an identical copy is a no-op."""
        manifest = verify_folder(source)
        target = self.folder(manifest.name, manifest.version)
        refused = manifest.version in self.refused(manifest.name)
        if target.exists() and not refused:
            if load_manifest(target) == manifest:
                return manifest
            raise ModelRejectedError(
                f"{manifest.ref} is already installed with different contents",
                where=str(target),
                hint="give the new model a new version",
            )
        staging = target.with_name(f".{manifest.version}.installing")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging, symlinks=True)  # never copy what a link points at
        if refused:  # a fixed copy replaces the refused one
            shutil.rmtree(target, ignore_errors=True)
            self.clear_refused(manifest.name, manifest.version)
        staging.replace(target)
        return manifest

    def entries(self) -> list[RegistryEntry]:
        found = []
        for name in self.names():
            active = self.active(name)
            refused = self.refused(name)
            for version in self.versions(name):
                manifest = load_manifest(self.folder(name, version))
                found.append(
                    RegistryEntry(
                        name,
                        version,
                        version == active,
                        tuple(manifest.variants),
                        {p: v.accuracy for p, v in manifest.variants.items()},
                        refused.get(version),
                    )
                )
        return found


def _version_sort_key(version: str) -> tuple[int, str]:
    head = version.split("-", 1)[0].split(".", 1)[0]
    return (int(head) if head.isdigit() else -1, version)
