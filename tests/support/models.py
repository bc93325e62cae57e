"""The project's shipped defect model, installed into temporary registries, and variants of it."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from edge.config import MoltbotConfig
from edge.files import sha256_file
from edge.inference.registry import ModelRegistry
from edge.inference.service import InferenceService
from models.defect.dataset import LABELS, make_image

REPO = Path(__file__).resolve().parents[2]
SHIPPED_DEFECT_MODEL = REPO / "models" / "defect" / "1"


def copy_version(
    destination_root: Path,
    version: str,
    *,
    source: Path = SHIPPED_DEFECT_MODEL,
    edit: dict | None = None,
) -> Path:
    """A copy of the shipped model as ``defect/<version>``, its manifest edited."""
    target = destination_root / "defect" / version
    shutil.copytree(source, target)
    manifest_path = target / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = version
    for key, value in (edit or {}).items():
        manifest[key] = value
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return target


def reseal(folder: Path, precision: str = "fp32") -> None:
    """Update a variant's sha256 after its file was changed on purpose."""
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    variant = manifest["variants"][precision]
    variant["sha256"] = sha256_file(folder / variant["file"])
    manifest_path.write_text(json.dumps(manifest, indent=2))


def installed_registry(root: Path) -> ModelRegistry:
    registry = ModelRegistry(root)
    registry.install(SHIPPED_DEFECT_MODEL)
    return registry


def defect_png(label: str = "scratch", seed: int = 7) -> bytes:
    """One PNG frame of ``label`` from the defect model's own generator (what a camera sends)."""
    buffer = io.BytesIO()
    Image.fromarray(make_image(label, np.random.default_rng(seed))).save(buffer, format="PNG")
    return buffer.getvalue()


def write_frames(folder: Path, per_label: int, seed: int) -> dict[str, list[Path]]:
    """PNG frames of each label; ``folder/<label>/<n>.png``."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for label in LABELS:
        (folder / label).mkdir(parents=True, exist_ok=True)
        written[label] = []
        for n in range(per_label):
            path = folder / label / f"{n:03d}.png"
            Image.fromarray(make_image(label, rng)).save(path)
            written[label].append(path)
    return written


def serving_defect_model(config: MoltbotConfig) -> InferenceService:
    """The shipped defect model installed under the config's model dir and serving on ORT."""
    paths = config.paths()
    service = InferenceService(
        config.inference, installed_registry(paths.model_dir), ["ort-cpu"], paths.engine_cache_dir
    )
    service.start()
    return service
