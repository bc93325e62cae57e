"""Synthetic surface-inspection images: textured metal-like surfaces with scratches, spots, cracks.

Deterministic for a seed, numpy only, so the training script, the tests and the benchmarks can
all make the same images without shipping a data set.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray

LABELS = ("ok", "scratch", "spot", "crack")
SIZE = 64
MEAN, STD, SCALE = 0.5, 0.25, 1.0 / 255.0  # the model's input normalisation (its manifest)


def _surface(rng: np.random.Generator) -> NDArray[np.float32]:
    """Brushed-metal texture: a base level, directional streaks, fine grain and shading."""
    base = rng.uniform(0.35, 0.65)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    angle = rng.uniform(0, np.pi)
    streaks = np.sin((x * np.cos(angle) + y * np.sin(angle)) * rng.uniform(40, 90))
    shading = (x - 0.5) * rng.uniform(-0.15, 0.15) + (y - 0.5) * rng.uniform(-0.15, 0.15)
    grain = rng.normal(0, rng.uniform(0.02, 0.05), (SIZE, SIZE))
    return (base + 0.03 * streaks + shading + grain).astype(np.float32)


def _draw_line(
    image: NDArray[np.float32], points: NDArray[np.float64], width: float, delta: float
) -> None:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        dx, dy = x1 - x0, y1 - y0
        length_sq = max(dx * dx + dy * dy, 1e-6)
        t = np.clip(((x - x0) * dx + (y - y0) * dy) / length_sq, 0, 1)
        distance = np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
        image += delta * np.clip(1 - distance / width, 0, 1)


def _scratch(image: NDArray[np.float32], rng: np.random.Generator) -> None:
    start = rng.uniform(4, SIZE - 4, 2)
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(20, 50)
    end = np.clip(start + length * np.array([np.cos(angle), np.sin(angle)]), 0, SIZE - 1)
    _draw_line(image, np.array([start, end]), rng.uniform(0.8, 1.6), rng.uniform(0.25, 0.45))


def _spot(image: NDArray[np.float32], rng: np.random.Generator) -> None:
    cy, cx = rng.uniform(10, SIZE - 10, 2)
    radius = rng.uniform(2.5, 6.0)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    blob = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2)))
    image += rng.choice([-1, 1]) * rng.uniform(0.25, 0.45) * blob


def _crack(image: NDArray[np.float32], rng: np.random.Generator) -> None:
    point = rng.uniform(8, SIZE - 8, 2)
    heading = rng.uniform(0, 2 * np.pi)
    points = [point.copy()]
    for _ in range(int(rng.integers(6, 12))):
        heading += rng.normal(0, 0.7)
        point = np.clip(
            point + rng.uniform(3, 6) * np.array([np.cos(heading), np.sin(heading)]), 0, SIZE - 1
        )
        points.append(point.copy())
    _draw_line(image, np.array(points), rng.uniform(0.6, 1.2), -rng.uniform(0.3, 0.5))


DEFECTS = {"scratch": _scratch, "spot": _spot, "crack": _crack}


def make_image(label: str, rng: np.random.Generator) -> NDArray[np.uint8]:
    """One 64×64 grayscale frame (uint8) of the given class."""
    image = _surface(rng)
    if label != "ok":
        DEFECTS[label](image, rng)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def make_dataset(count: int, seed: int) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """``count`` images with balanced labels, shuffled; images (N, 64, 64) uint8, labels (N,)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(LABELS)
    rng.shuffle(labels)
    images = np.stack([make_image(LABELS[label], rng) for label in labels])
    return images, labels.astype(np.int64)


def normalise(images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(N, 64, 64) uint8 frames → (N, 1, 64, 64) model inputs, as the manifest describes."""
    scaled = images.astype(np.float32) * SCALE
    return ((scaled - MEAN) / STD)[:, None, :, :].astype(np.float32)
