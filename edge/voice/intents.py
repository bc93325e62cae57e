"""Recognised words → an intent, only when the whole phrase matches and every word is sure.

Grammar mode is known to report confident false matches for chatter; so an intent needs the
recognised word sequence to equal one configured phrase exactly, and each word's confidence to
reach the intent's threshold. Anything else is "no action".
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
    confidence: float  # the least sure word
    model: str | None


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


class IntentMatcher:
    def __init__(self, intents: dict[str, IntentSettings], min_confidence: float) -> None:
        self.intents = intents
        self.min_confidence = min_confidence
        self._by_phrase = {
            normalise(phrase): name for name, intent in intents.items() for phrase in intent.phrases
        }

    @property
    def phrases(self) -> list[str]:
        return sorted(self._by_phrase)

    def match(self, words: list[Word]) -> IntentMatch | None:
        if not words:
            return None
        phrase = normalise(" ".join(word.text for word in words))
        name = self._by_phrase.get(phrase)
        if name is None:
            return None
        intent = self.intents[name]
        threshold = (
            intent.min_confidence if intent.min_confidence is not None else (self.min_confidence)
        )
        confidence = min(word.confidence for word in words)
        if confidence < threshold:
            return None
        return IntentMatch(name, intent.action, phrase, confidence, intent.model)
