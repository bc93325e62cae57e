"""What words a Vosk model knows: its ``graph/words.txt``, or the symbol table inside ``Gr.fst``.

Small Vosk models (HCLr.fst + Gr.fst) carry their vocabulary only as the OpenFst symbol table of
``Gr.fst``. The binary layout read here is OpenFst's ``FstHeader`` followed by the input and
output ``SymbolTable`` (written when the header's flags say so); nothing else of the FST is read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

from edge.errors import ConfigError, VoiceError

FST_MAGIC = 2125659606
SYMBOL_TABLE_MAGIC = 2125658996
HAS_ISYMBOLS, HAS_OSYMBOLS = 0x1, 0x2
WORDS_FILE = "graph/words.txt"
GRAMMAR_FST = "graph/Gr.fst"
LOOKAHEAD_FST = "graph/HCLr.fst"
# Kaldi's bookkeeping symbols, kept in any words.txt we write: Vosk and the decoder expect them.
SPECIAL_WORDS = ("<eps>", "!SIL", "<UNK>", "<unk>", "[unk]", "#0", "<s>", "</s>")


class VocabularyError(ConfigError):
    """Configured phrases use words the Vosk model does not know (exit 2)."""


@dataclass(frozen=True)
class Vocabulary:
    """Word → symbol id, as the model's decoding graph numbers them."""

    ids: dict[str, int]  # only the words asked about (see ``model_vocabulary``)
    source: str

    def __contains__(self, word: object) -> bool:
        return word in self.ids

    def missing(self, phrases: Iterable[str]) -> list[str]:
        """Words of ``phrases`` the model cannot recognise, in first-seen order."""
        seen: dict[str, None] = {}
        for phrase in phrases:
            for word in phrase.split():
                if word not in self.ids:
                    seen.setdefault(word, None)
        return list(seen)

    def words_txt(self, words: Iterable[str]) -> str:
        """A ``words.txt`` holding ``words`` (and Kaldi's specials) with the model's ids."""
        keep = dict.fromkeys(w for w in (*SPECIAL_WORDS, *words) if w in self.ids)
        return "".join(f"{word} {self.ids[word]}\n" for word in keep)


def _read_exact(stream: BinaryIO, size: int, where: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise VoiceError(
            "the FST file ends inside its header", where=where, hint="reinstall the model"
        )
    return data


def _int(stream: BinaryIO, fmt: str, where: str) -> int:
    value: int = struct.unpack(fmt, _read_exact(stream, struct.calcsize(fmt), where))[0]
    return value


def _string(stream: BinaryIO, where: str) -> str:
    return _read_exact(stream, _int(stream, "<i", where), where).decode("utf-8")


def _symbols(stream: BinaryIO, where: str) -> Iterator[tuple[bytes, int]]:
    """(symbol, id) of one OpenFst symbol table, read as it goes."""
    if _int(stream, "<i", where) != SYMBOL_TABLE_MAGIC:
        raise VoiceError("bad OpenFst symbol table", where=where, hint="reinstall the model")
    _string(stream, where)  # the table's name
    _int(stream, "<q", where)  # available key
    size = _int(stream, "<q", where)
    for _ in range(size):
        symbol = _read_exact(stream, _int(stream, "<i", where), where)
        yield symbol, _int(stream, "<q", where)


def read_fst_output_symbols(path: Path, wanted: frozenset[str]) -> dict[str, int]:
    """Ids of ``wanted`` words in the output symbol table stored in an OpenFst file's header."""
    wanted_bytes = {w.encode("utf-8"): w for w in wanted}
    return {
        wanted_bytes[symbol]: key
        for symbol, key in fst_output_symbols(path)
        if symbol in wanted_bytes
    }


def fst_output_symbols(path: Path) -> Iterator[tuple[bytes, int]]:
    """Every (word, id) of the output symbol table in an OpenFst file's header."""
    where = str(path)
    with path.open("rb") as stream:
        if _int(stream, "<i", where) != FST_MAGIC:
            raise VoiceError("not an OpenFst file", where=where, hint="reinstall the model")
        _string(stream, where)  # fst type
        _string(stream, where)  # arc type
        _int(stream, "<i", where)  # version
        flags = _int(stream, "<i", where)
        _read_exact(stream, 8 + 8 * 3, where)  # properties, start, states, arcs
        if not flags & HAS_OSYMBOLS:
            raise VoiceError(
                "the grammar FST has no word symbols",
                where=where,
                hint="add graph/words.txt to the model",
            )
        if flags & HAS_ISYMBOLS:
            for _ in _symbols(stream, where):
                pass
        yield from _symbols(stream, where)


def _read_words_txt(path: Path, wanted: frozenset[str]) -> dict[str, int]:
    table: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            parts = line.split()
            if len(parts) == 2 and parts[0] in wanted:
                table[parts[0]] = int(parts[1])
    return table


@cache
def _cached(path: str, mtime_ns: int, wanted: frozenset[str]) -> Vocabulary:
    del mtime_ns  # part of the cache key only
    file = Path(path)
    reader = _read_words_txt if file.name == "words.txt" else read_fst_output_symbols
    return Vocabulary(reader(file, wanted), path)


def model_vocabulary(model_dir: Path, wanted: Iterable[str]) -> Vocabulary:
    """Which of the ``wanted`` words the model knows, with their ids.

    One pass over the model's word list (~0.7 s for 500 k words); only the wanted words are
    kept, so the big table never sits in memory.
    """
    wanted_set = frozenset({*SPECIAL_WORDS, *(w for item in wanted for w in item.split())})
    for relative in (WORDS_FILE, GRAMMAR_FST):
        path = model_dir / relative
        if path.is_file():
            return _cached(str(path.resolve()), path.stat().st_mtime_ns, wanted_set)
    raise VoiceError(
        f"{model_dir} has neither {WORDS_FILE} nor {GRAMMAR_FST}: its vocabulary is unknown",
        where=str(model_dir),
        hint="use a Vosk model with a runtime graph (HCLr.fst + Gr.fst), as the small models are",
    )


def check_phrases(vocabulary: Vocabulary, phrases: Iterable[str], where: str) -> None:
    """Refuse phrases with words outside the model's vocabulary, naming every one of them."""
    missing = vocabulary.missing(phrases)
    if missing:
        raise VocabularyError(
            f"the Vosk model does not know {len(missing)} word(s) of the voice phrases: "
            + ", ".join(repr(w) for w in missing),
            where=where,
            hint="use phrases in the model's language (unset voice.intents for the built-in "
            "set) and check them with `moltbot voice check PHRASE...`",
        )
