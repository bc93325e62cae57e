"""Recognised words → an intent, only when the whole reading is one command phrase and sure.

Grammar mode reports word confidences of 1.0 for whatever it forces onto the grammar, so they
say nothing. Instead the grammar holds filler words that other speech decodes to, and a
command fires only when Vosk's best reading is exactly one phrase (no filler, nothing more) and
leads the best rival reading by ``voice.min_margin`` (Vosk's score, log-likelihood units). A
rival is a reading that, fillers left out, is another command: "검사 중지 다" is a rival of
"검사 시작"; "검사 시작 이" is not. In free mode
(dictation) the least word confidence must reach the intent's threshold. Anything else is "no
action".
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.config.model import IntentAction, IntentSettings


@dataclass(frozen=True)
class Word:
    text: str
    confidence: float


@dataclass(frozen=True)
class IntentMatch:
    intent: str
    action: IntentAction
    phrase: str
    confidence: float  # free mode: the least sure word; grammar mode: 1.0 (see margin)
    model: str | None
    margin: float | None = None  # grammar mode: lead over the next reading; None: no rival


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


class IntentMatcher:
    def __init__(
        self,
        intents: dict[str, IntentSettings],
        min_confidence: float,
        min_margin: float | None = None,
        fillers: list[str] | None = None,
    ) -> None:
        self.intents = intents
        self.min_confidence = min_confidence
        self.min_margin = min_margin  # None: free mode, judge word confidences
        self.fillers = set(fillers or ())
        self._by_phrase = {
            normalise(phrase): name for name, intent in intents.items() for phrase in intent.phrases
        }

    @property
    def phrases(self) -> list[str]:
        return sorted(self._by_phrase)

    def margin(self, phrase: str, alternatives: tuple[tuple[str, float], ...]) -> float | None:
        """The best reading's lead over the best rival; None when there is no rival."""
        rivals = [
            score
            for text, score in alternatives[1:]
            if (core := " ".join(w for w in normalise(text).split() if w not in self.fillers))
            != phrase
            and core in self._by_phrase
        ]
        return alternatives[0][1] - max(rivals) if rivals and alternatives else None

    def match(
        self, words: list[Word], alternatives: tuple[tuple[str, float], ...] = ()
    ) -> IntentMatch | None:
        if not words:
            return None
        phrase = normalise(" ".join(word.text for word in words))
        name = self._by_phrase.get(phrase)
        if name is None:
            return None
        intent = self.intents[name]
        confidence = min(word.confidence for word in words)
        if self.min_margin is not None:
            margin = self.margin(phrase, alternatives)
            if margin is not None and margin < self.min_margin:
                return None
            return IntentMatch(name, intent.action, phrase, confidence, intent.model, margin)
        threshold = (
            intent.min_confidence if intent.min_confidence is not None else self.min_confidence
        )
        if confidence < threshold:
            return None
        return IntentMatch(name, intent.action, phrase, confidence, intent.model)
