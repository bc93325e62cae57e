"""Vocabulary, built-in intent sets, fillers and the margin rule: pure logic, no Vosk."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from edge.config.model import IntentSettings
from edge.errors import InputError
from edge.voice.intent_sets import ENGLISH, KOREAN, fillers_for, grammar_of, set_for
from edge.voice.intents import IntentMatcher, Word
from edge.voice.vocabulary import (
    FST_MAGIC,
    SYMBOL_TABLE_MAGIC,
    Vocabulary,
    VocabularyError,
    check_phrases,
    model_vocabulary,
)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<i", len(data)) + data


def _table(symbols: dict[str, int]) -> bytes:
    body = b"".join(_string(s) + struct.pack("<q", k) for s, k in symbols.items())
    head = struct.pack("<i", SYMBOL_TABLE_MAGIC) + _string("words.txt")
    return head + struct.pack("<qq", max(symbols.values()) + 1, len(symbols)) + body


def write_grammar_fst(path: Path, symbols: dict[str, int]) -> Path:
    """An OpenFst header with input and output symbol tables, as Gr.fst starts."""
    header = struct.pack("<i", FST_MAGIC) + _string("ngram") + _string("standard")
    header += struct.pack("<ii", 4, 3) + struct.pack("<Qqqq", 0, 1, 2, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + _table({"<eps>": 0}) + _table(symbols) + b"\0" * 64)
    return path


def vocabulary(*words: str) -> Vocabulary:
    return Vocabulary({w: n for n, w in enumerate(words, 1)}, "test")


def test_words_are_read_from_the_symbol_table_in_a_grammar_fst(tmp_path: Path) -> None:
    write_grammar_fst(tmp_path / "graph" / "Gr.fst", {"<eps>": 0, "검사": 7, "시작": 9, "#0": 11})
    found = model_vocabulary(tmp_path, ["검사 시작", "중지"])
    assert found.ids == {"<eps>": 0, "검사": 7, "시작": 9, "#0": 11}
    assert found.missing(["검사 중지"]) == ["중지"]
    assert found.words_txt(["시작", "검사"]) == "<eps> 0\n#0 11\n시작 9\n검사 7\n"


def test_phrases_with_unknown_words_are_refused_naming_every_word() -> None:
    known = vocabulary("검사", "시작")
    with pytest.raises(VocabularyError, match="'start', 'inspection', 'status'") as caught:
        check_phrases(known, ["start inspection", "status", "검사 시작"], "voice.intents")
    assert isinstance(caught.value, InputError)  # exit 2
    assert caught.value.where == "voice.intents"
    assert "moltbot voice check" in (caught.value.hint or "")


def test_fillers_share_no_syllable_with_any_command_word() -> None:
    known = vocabulary(*KOREAN.filler_pool)
    fillers = fillers_for(["검사 시작", "보고 해"], KOREAN.filler_pool, known)
    assert len(fillers) == 8
    assert not set("".join(fillers)) & set("검사시작보고해")


def test_the_built_in_set_is_the_one_the_model_vocabulary_covers() -> None:
    korean_words = [w for i in KOREAN.intents.values() for p in i.phrases for w in p.split()]
    english_words = [w for i in ENGLISH.intents.values() for p in i.phrases for w in p.split()]
    assert set_for(vocabulary(*korean_words), "auto") is KOREAN
    assert set_for(vocabulary(*english_words), "auto") is ENGLISH
    assert set_for(vocabulary("bonjour"), "auto") is None
    assert set_for(vocabulary(), "en") is ENGLISH


def test_lone_command_words_are_sentences_of_the_grammar() -> None:
    assert grammar_of(["검사 시작", "검사 중지"], ["이"]) == [
        "검사 시작",
        "검사 중지",
        "검사",
        "시작",
        "중지",
        "이",
    ]


def matcher() -> IntentMatcher:
    intents = {
        "start": IntentSettings(phrases=["검사 시작"], action="start_inspection"),
        "stop": IntentSettings(phrases=["검사 중지"], action="stop_inspection"),
    }
    return IntentMatcher(intents, 0.6, min_margin=1.0, fillers=["이", "다"])


def words(text: str) -> list[Word]:
    return [Word(w, 1.0) for w in text.split()]


def test_a_command_read_almost_as_well_as_another_command_does_not_fire() -> None:
    close = (("검사 시작", 84.6), ("검사 중지 다", 84.0))
    assert matcher().match(words("검사 시작"), close) is None
    clear = (("검사 시작", 84.6), ("검사 중지 다", 80.0))
    match = matcher().match(words("검사 시작"), clear)
    assert match is not None
    assert match.intent == "start"
    assert match.margin == pytest.approx(4.6)


def test_the_same_command_with_fillers_is_no_rival() -> None:
    readings = (("검사 시작", 91.8), ("검사 시작 이", 91.7), ("검사 시작 다", 91.5))
    match = matcher().match(words("검사 시작"), readings)
    assert match is not None
    assert match.margin is None


def test_a_command_with_a_filler_or_a_lone_command_word_fires_nothing() -> None:
    assert matcher().match(words("검사 시작 이"), (("검사 시작 이", 90.0),)) is None
    assert matcher().match(words("검사"), (("검사", 90.0),)) is None
