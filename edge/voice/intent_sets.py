"""Built-in intent phrases per model language, and the filler words that absorb other speech.

Vosk's grammar mode forces every sound onto the grammar's words. Fillers give speech that is not
a command somewhere else to go: common short words of the model's own vocabulary that share no
syllable (Korean) or word part (English) with a command, so they cannot spell one. An intent
fires only when the best path is exactly a command phrase (see ``intents.py``).

Phrases were chosen so that the model tells them apart (``moltbot voice check`` and
``bench/bench_voice.py`` measure it): the Korean status phrase is "보고 해" because "상태 …"
phrases were heard as "검사 중지" or lost to fillers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edge.config.model import IntentSettings, VoiceSettings
from edge.voice.recognizer import check_model_dir
from edge.voice.vocabulary import Vocabulary, VocabularyError, check_phrases, model_vocabulary

FILLER_COUNT = 8  # more fillers start to swallow slow or unclear commands (see the benchmark)


@dataclass(frozen=True)
class IntentSet:
    language: str
    intents: dict[str, IntentSettings]
    filler_pool: tuple[str, ...]  # most common first


KOREAN = IntentSet(
    "ko",
    {
        "start": IntentSettings(phrases=["검사 시작"], action="start_inspection"),
        "stop": IntentSettings(phrases=["검사 중지"], action="stop_inspection"),
        "status": IntentSettings(phrases=["보고 해"], action="report_status"),
    },
    (
        "이",
        "다",
        "는",
        "에",
        "의",
        "가",
        "을",
        "를",
        "하",
        "고",
        "한",
        "지",
        "로",
        "서",
        "기",
        "도",
        "사",
        "자",
        "리",
        "어",
        "나",
        "아",
        "수",
        "해",
    ),
)
ENGLISH = IntentSet(
    "en",
    {
        "start": IntentSettings(phrases=["start inspection"], action="start_inspection"),
        "stop": IntentSettings(phrases=["stop inspection"], action="stop_inspection"),
        "status": IntentSettings(phrases=["status report"], action="report_status"),
    },
    (
        "the",
        "and",
        "you",
        "that",
        "what",
        "is",
        "it",
        "we",
        "okay",
        "yes",
        "no",
        "hello",
        "thank",
        "please",
        "here",
        "there",
        "good",
        "one",
        "two",
        "well",
        "uh",
        "um",
        "oh",
    ),
)
SETS = {s.language: s for s in (KOREAN, ENGLISH)}


def words_to_look_up(intents: dict[str, IntentSettings]) -> list[str]:
    """Every word whose presence in the model decides the set, its fillers and the checks."""
    return [
        *phrases_of(intents),
        *(p for s in SETS.values() for p in (*phrases_of(s.intents), *s.filler_pool)),
    ]


def phrases_of(intents: dict[str, IntentSettings]) -> list[str]:
    return [p for intent in intents.values() for p in intent.phrases]


def fillers_for(
    phrases: Iterable[str], pool: Iterable[str], vocabulary: Vocabulary, count: int = FILLER_COUNT
) -> list[str]:
    """Up to ``count`` pool words the model knows that are no part of any command word."""
    command_words = {w for phrase in phrases for w in phrase.split()}
    return [
        filler
        for filler in pool
        if filler in vocabulary and not any(filler in word for word in command_words)
    ][:count]


def grammar_of(phrases: list[str], fillers: list[str]) -> list[str]:
    """Vosk's grammar: the phrases, each of their words alone, and the fillers.

    Vosk turns the list into a bigram model; a command word as a sentence of its own lets a
    lone "보고" end there instead of being completed into the command "보고 해".
    """
    words = [w for phrase in phrases for w in phrase.split()]
    return list(dict.fromkeys([*phrases, *words, *fillers]))


def set_for(vocabulary: Vocabulary, language: str) -> IntentSet | None:
    """The set for ``language``; for ``auto`` the first whose every word the model knows."""
    if language != "auto":
        return SETS.get(language)
    for intent_set in SETS.values():
        if not vocabulary.missing(phrases_of(intent_set.intents)):
            return intent_set
    return None


@dataclass(frozen=True)
class ResolvedIntents:
    intents: dict[str, IntentSettings]
    fillers: list[str]
    vocabulary: Vocabulary
    language: str | None  # the language of the model's built-in set (its fillers)
    builtin: bool  # the built-in phrases, not the site's voice.intents


def resolve_intents(
    settings: VoiceSettings, model_dir: Path, more_words: Iterable[str] = ()
) -> ResolvedIntents:
    """The intents to listen for and the grammar's fillers; refuses words the model lacks.

    ``more_words``: other words to look up in the same pass (``moltbot voice check``).
    """
    check_model_dir(model_dir)
    vocabulary = model_vocabulary(model_dir, [*words_to_look_up(settings.intents), *more_words])
    intent_set = set_for(vocabulary, settings.language)
    intents = settings.intents or (intent_set.intents if intent_set else {})
    if not intents:
        raise VocabularyError(
            f"no built-in intent set fits the Vosk model in {model_dir} "
            f"(voice.language: {settings.language})",
            where="voice.intents",
            hint="set voice.intents with phrases in the model's language, or use a Korean or "
            "English model",
        )
    phrases = phrases_of(intents)
    check_phrases(vocabulary, phrases, "voice.intents" if settings.intents else "voice.language")
    pool = intent_set.filler_pool if intent_set else ()
    return ResolvedIntents(
        intents,
        fillers_for(phrases, pool, vocabulary),
        vocabulary,
        intent_set.language if intent_set else None,
        not settings.intents,
    )
