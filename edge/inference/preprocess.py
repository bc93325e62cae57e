"""Frames to input tensors, exactly as the model's manifest says."""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from edge.errors import InvalidImageError
from edge.inference.manifest import ModelManifest

MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding


def decode_image(data: bytes, source: str = "upload") -> NDArray[np.uint8]:
    """PNG/JPEG/BMP/… bytes → an (H, W) or (H, W, 3) uint8 array."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InvalidImageError(
                    f"image is {image.width}x{image.height}, too large to decode",
                    where=source,
                    hint=f"send frames under {MAX_PIXELS} pixels",
                )
            converted = (
                image.convert("L") if image.mode in ("L", "I;16", "1") else image.convert("RGB")
            )
            return np.asarray(converted, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidImageError(
            f"not a readable image: {exc}",
            where=source,
            hint="send a PNG, JPEG or BMP file",
        ) from exc


def to_tensor(pixels: NDArray[np.uint8], manifest: ModelManifest) -> NDArray[np.float32]:
    """One frame → a (1, C, H, W) float32 tensor: colour, size and normalisation per manifest."""
    spec = manifest.input
    height, width = spec.height_width
    image = Image.fromarray(pixels)
    image = image.convert("L" if spec.color == "grayscale" else "RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    norm = manifest.normalization
    mean = np.asarray(norm.mean, dtype=np.float32)
    std = np.asarray(norm.std, dtype=np.float32)
    array = (array * norm.scale - mean) / std
    tensor: NDArray[np.float32] = np.ascontiguousarray(
        array.transpose(2, 0, 1)[None, ...], dtype=np.float32
    )
    return tensor


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    shifted: NDArray[np.float32] = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted
