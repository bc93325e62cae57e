"""Audio to what the recogniser wants: mono int16 at 16 kHz, from any rate, width, channels."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

TAPS = 31


def to_mono_float(samples: NDArray[np.generic], sample_width: int) -> NDArray[np.float32]:
    """Interleaved (frames, channels) integers → mono float32 in [-1, 1]."""
    data = samples.astype(np.float32)
    if sample_width == 1:  # 8-bit WAV is unsigned
        data = (data - 128.0) / 128.0
    elif sample_width == 2:
        data = data / 32768.0
    elif sample_width == 4:
        data = data / 2147483648.0
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data.astype(np.float32)


def to_int16_bytes(samples: NDArray[np.float32]) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class StreamResampler:
    """Windowed-sinc low-pass then linear interpolation, keeping state across chunks."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate, self.to_rate = from_rate, to_rate
        self.step = from_rate / to_rate
        cutoff = min(1.0, to_rate / from_rate) * 0.9
        n = np.arange(TAPS) - (TAPS - 1) / 2
        kernel = cutoff * np.sinc(cutoff * n) * np.hamming(TAPS)
        self.kernel = (kernel / kernel.sum()).astype(np.float32)
        self._history = np.zeros(TAPS - 1, dtype=np.float32)
        self._position = 0.0  # fractional read position into the filtered stream

    def process(self, samples: NDArray[np.float32]) -> NDArray[np.float32]:
        if self.from_rate == self.to_rate:
            return samples
        joined = np.concatenate([self._history, samples])
        filtered = np.convolve(joined, self.kernel, mode="valid")
        self._history = joined[-(TAPS - 1) :]
        positions = np.arange(self._position, len(filtered) - 1, self.step)
        self._position = (
            (positions[-1] + self.step - len(filtered))
            if len(positions)
            else (self._position - len(filtered))
        )
        base = np.floor(positions).astype(np.int64)
        fraction = (positions - base).astype(np.float32)
        resampled: NDArray[np.float32] = filtered[base] * (1 - fraction) + (
            filtered[base + 1] * fraction
        )
        return resampled
