"""Our own end-of-speech detection: a calibrated energy gate on 20 ms frames.

Vosk's built-in endpointing waits 0.5–2 s of trailing silence; a factory command is short, so
the gate ends the utterance after ``end_of_speech_silence_ms`` of non-speech and the recogniser's
final result is taken at once. The noise floor adapts while nobody speaks (slowly rising, quickly
falling), so a humming machine hall does not count as speech.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

FRAME_MS = 20
FRAME_SAMPLES = 320  # at 16 kHz
SPEECH_MARGIN_DB = 12.0
MIN_SPEECH_DBFS = -50.0
ONSET_MS = 60


class Boundary(StrEnum):
    NONE = "none"
    START = "start"
    END = "end"


@dataclass
class EnergyEndpointer:
    silence_ms: int = 300
    floor_dbfs: float = -60.0
    in_speech: bool = False
    _speech_run_ms: int = 0
    _silence_run_ms: int = 0

    def frame(self, samples: np.ndarray) -> Boundary:
        """Feed one 20 ms frame (int16); says when an utterance starts or ends."""
        rms = math.sqrt(float(np.mean(samples.astype(np.float32) ** 2)) + 1e-9) / 32768.0
        level = 20 * math.log10(rms + 1e-12)
        speech = level > max(self.floor_dbfs + SPEECH_MARGIN_DB, MIN_SPEECH_DBFS)
        if not self.in_speech:
            self._track_floor(level, speech)
            self._speech_run_ms = self._speech_run_ms + FRAME_MS if speech else 0
            if self._speech_run_ms >= ONSET_MS:
                self.in_speech, self._silence_run_ms = True, 0
                return Boundary.START
            return Boundary.NONE
        self._silence_run_ms = 0 if speech else self._silence_run_ms + FRAME_MS
        if self._silence_run_ms >= self.silence_ms:
            self.in_speech, self._speech_run_ms = False, 0
            return Boundary.END
        return Boundary.NONE

    def _track_floor(self, level: float, speech: bool) -> None:
        rate = 0.02 if level > self.floor_dbfs else 0.3  # rise slowly, fall fast
        if not speech or level < self.floor_dbfs:
            self.floor_dbfs += rate * (level - self.floor_dbfs)
