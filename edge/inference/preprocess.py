"""Frames to input tensors, exactly as the model's manifest says."""

from __future__ import annotations

import io
import re
import struct

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from edge.errors import ImageTooLargeError, InvalidImageError
from edge.inference.manifest import ModelManifest

MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding
# What a hostile or truncated file makes Pillow's decoders raise besides OSError/ValueError.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    TypeError,
    IndexError,
    ZeroDivisionError,
)


def decode_image(data: bytes, source: str = "upload") -> NDArray[np.uint8]:
    """PNG/JPEG/BMP/… bytes → an (H, W) or (H, W, 3) uint8 array.

    Raises ``ImageTooLargeError`` for a header that declares more than ``MAX_PIXELS`` pixels
    (before any pixel is decoded) and ``InvalidImageError`` for anything else unreadable.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(image.width, image.height, source)
            converted = (
                image.convert("L") if image.mode in ("L", "I;16", "1") else image.convert("RGB")
            )
            return np.asarray(converted, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fires first for really large headers (and warns, which tests
        # and strict deployments turn into errors, between its two limits).
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(int(pixels[1]) if pixels else None, source) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"not a readable image: not a format we decode ({_first_bytes(data)})",
            where=source,
            hint="send a PNG, JPEG or BMP file",
        ) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImageError(
            f"not a readable image: {type(exc).__name__}: {exc}",
            where=source,
            hint="send a PNG, JPEG or BMP file",
        ) from exc


def _check_pixels(width: int, height: int, source: str) -> None:
    if width * height > MAX_PIXELS:
        raise _too_large(width * height, source, f"{width}x{height}")


def _too_large(pixels: int | None, source: str, size: str | None = None) -> ImageTooLargeError:
    declared = f"{size} = {pixels} pixels" if size else f"{pixels or 'too many'} pixels"
    return ImageTooLargeError(
        f"image is too large to decode: its header declares {declared}, over the limit of "
        f"{MAX_PIXELS} pixels",
        where=source,
        hint=f"send frames of at most {MAX_PIXELS} pixels (e.g. 6000x6000); scale them down "
        "at the camera",
    )


def _first_bytes(data: bytes) -> str:
    return f"{len(data)} bytes starting {data[:8]!r}" if data else "empty"


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
