"""Finding image files in a folder (calibration sets, held-out sets, watched folders)."""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff"})


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []
