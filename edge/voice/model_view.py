"""A grammar-only view of a Vosk model: the same files, but only the words the grammar uses.

Vosk keeps the whole vocabulary in memory (500 k words for the small Korean model) and, when
the model has one, the language model ``Gr.fst`` that grammar mode never uses. The view is a
folder of symlinks to the model's files, without ``Gr.fst`` and with a ``graph/words.txt`` that
holds only the grammar's words under their original ids, so decoding is unchanged. Views live
in the temporary directory, one per (model, word list), and are rebuilt when missing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from edge.errors import VoiceError
from edge.voice.vocabulary import GRAMMAR_FST, LOOKAHEAD_FST, WORDS_FILE, Vocabulary


def view_root() -> Path:
    return Path(tempfile.gettempdir()) / "moltbot-vosk-views"


def grammar_view(model_dir: Path, phrases: list[str], vocabulary: Vocabulary) -> Path:
    """The folder to load for a grammar of ``phrases``; the model itself if it has no HCLr.fst."""
    if not (model_dir / LOOKAHEAD_FST).is_file():
        return model_dir  # a static-graph model (HCLG.fst): Vosk ignores grammars anyway
    words_txt = vocabulary.words_txt(sorted({w for phrase in phrases for w in phrase.split()}))
    key = hashlib.sha256(f"{model_dir.resolve()}\n{words_txt}".encode()).hexdigest()[:16]
    view = view_root() / key
    if (view / WORDS_FILE).is_file():
        return view
    staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=_ensure(view_root())))
    for entry in model_dir.resolve().iterdir():
        if entry.name != "graph":
            (staging / entry.name).symlink_to(entry)
    (staging / "graph").mkdir()
    for entry in (model_dir / "graph").resolve().iterdir():
        if f"graph/{entry.name}" not in (GRAMMAR_FST, WORDS_FILE):
            (staging / "graph" / entry.name).symlink_to(entry)
    (staging / WORDS_FILE).write_text(words_txt, encoding="utf-8")
    try:
        staging.rename(view)
    except OSError:  # another process built the same view first
        shutil.rmtree(staging, ignore_errors=True)
    return view


def _ensure(folder: Path) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise VoiceError(
            "the folder for Vosk model views belongs to another user",
            where=str(folder),
            hint="remove it, or give this service its own temporary directory (PrivateTmp)",
        )
    return folder
