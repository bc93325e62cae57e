"""``moltbot voice check``: is a phrase in the model's vocabulary, and is it told apart?

Each phrase is spoken by espeak-ng (when installed, in the model's language) at three speaking
rates and two pitches, and decoded with the full grammar (the configured phrases, the phrases
being checked and the fillers) through the same listener the appliance uses. A phrase is good
when every reading is itself; one heard as another phrase is confusable.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edge.config.model import IntentSettings, VoiceSettings
from edge.voice.audio import WavSource
from edge.voice.intent_sets import grammar_of, resolve_intents
from edge.voice.intents import IntentMatcher
from edge.voice.listener import VoiceListener
from edge.voice.recognizer import Recognizer, load_model

RATES_WPM = (130, 175, 220)
PITCHES = (30, 70)
NOTHING = "(no command)"
GOOD_RECALL = 5 / 6


@dataclass
class PhraseReport:
    phrase: str
    missing_words: list[str]
    heard: Counter[str] = field(default_factory=Counter)  # what each rendition became

    @property
    def trials(self) -> int:
        return sum(self.heard.values())

    @property
    def recall(self) -> float | None:
        return self.heard[self.phrase] / self.trials if self.trials else None

    @property
    def confusions(self) -> dict[str, int]:
        return {k: v for k, v in self.heard.items() if k != self.phrase}


def espeak_voice(language: str | None) -> str | None:
    """The espeak-ng voice for ``language``, when espeak-ng and sox are installed."""
    if language is None or not (shutil.which("espeak-ng") and shutil.which("sox")):
        return None
    return language


def speak(text: str, voice: str, rate_wpm: int, pitch: int, path: Path) -> Path:
    raw = path.with_suffix(".raw.wav")
    espeak = ["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "-w", str(raw)]
    subprocess.run([*espeak, text], check=True, capture_output=True)  # noqa: S603
    sox = ["sox", "-q", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path)]
    subprocess.run([*sox, "pad", "0.4", "0.6"], check=True, capture_output=True)  # noqa: S603
    return path


def check_phrases(
    settings: VoiceSettings, model_dir: Path, phrases: list[str]
) -> list[PhraseReport]:
    """Coverage of ``phrases`` and, where espeak-ng can speak them, what the model hears."""
    resolved = resolve_intents(settings, model_dir, phrases)
    candidates = {
        f"check{n}": IntentSettings(phrases=[p], action="none") for n, p in enumerate(phrases)
    }
    reports = [PhraseReport(p, resolved.vocabulary.missing([p])) for p in phrases]
    known = [r.phrase for r in reports if not r.missing_words]
    everything = {
        **resolved.intents,
        **{k: v for k, v in candidates.items() if v.phrases[0] in known},
    }
    voice = espeak_voice(resolved.language)
    if voice is None or not known:
        return reports
    matcher = IntentMatcher(
        everything, settings.min_confidence, settings.min_margin, resolved.fillers
    )
    grammar = grammar_of(matcher.phrases, resolved.fillers)
    model = load_model(model_dir, grammar, resolved.vocabulary)
    with tempfile.TemporaryDirectory() as scratch:
        for report in reports:
            if report.missing_words:
                continue
            for rate, pitch in itertools.product(RATES_WPM, PITCHES):
                wav = speak(report.phrase, voice, rate, pitch, Path(scratch) / "phrase.wav")
                listener = VoiceListener(Recognizer(model, 16_000, grammar), matcher, 200)
                fired = [u.intent.phrase for u in listener.utterances(WavSource(wav)) if u.intent]
                report.heard[fired[0] if len(fired) == 1 else NOTHING] += 1
    return reports
