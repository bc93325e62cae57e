"""Property-based fuzzing of the parsers that take outside input: MQTT command payloads, event
lines, model manifests, site files, recipes and image headers. Each either succeeds or raises
its one typed error — never anything else."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.errors import ConfigError, InvalidImageError, MessageRejectedError, ModelRejectedError
from edge.inference.manifest import load_manifest
from edge.inference.preprocess import decode_image
from edge.outbox.batch import parse_line
from edge.uplink.commands import CommandRouter
from images.recipe import RecipeError, load_recipe
from tests.support.hostile import png_declaring

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


class RecordingOutbox:
    """Stands in for the outbox only to record what the router queues (no I/O is under test)."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, dict[str, Any]]] = []

    def put(self, kind: str, payload: dict[str, Any]) -> None:
        self.queued.append((kind, payload))

    def stats(self) -> Any:
        raise AssertionError("ping is not fuzzed")


@FUZZ
@given(name=st.sampled_from(["frobnicate", "activate"]), payload=st.binary(max_size=200))
def test_any_command_payload_becomes_exactly_one_error_event(name: str, payload: bytes) -> None:
    outbox = RecordingOutbox()
    CommandRouter(outbox).handle(name, payload)  # type: ignore[arg-type]
    [(kind, body)] = outbox.queued
    assert kind == "error"
    assert body["command"] == name


@FUZZ
@given(text=st.text(max_size=200) | json_values.map(json.dumps))
def test_an_event_line_is_an_event_nothing_or_a_message_rejected(text: str) -> None:
    try:
        parse_line(text, 7, default_kind=None, default_qos=1)
    except MessageRejectedError as exc:
        assert exc.where == "line 7"


@FUZZ
@given(document=json_values)
def test_any_manifest_json_is_a_manifest_or_a_model_rejected(document: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "manifest.json").write_text(json.dumps(document))
        try:
            load_manifest(Path(folder))
        except ModelRejectedError as exc:
            assert exc.where


@FUZZ
@given(text=st.text(max_size=300))
def test_any_site_file_text_is_a_config_or_a_config_error(text: str) -> None:
    from edge.config.loading import load_config

    with tempfile.TemporaryDirectory() as folder:
        site = Path(folder) / "site.yaml"
        site.write_text(text, encoding="utf-8")
        try:
            load_config(site_file=site, environ={}, system_file=Path(folder) / "none.yaml")
        except ConfigError as exc:
            assert len(str(exc)) < 50_000


@FUZZ
@given(text=st.text(max_size=300))
def test_any_recipe_text_is_a_recipe_or_a_recipe_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        recipe = Path(folder) / "recipe.yaml"
        recipe.write_text(text, encoding="utf-8")
        with contextlib.suppress(RecipeError):
            load_recipe(recipe, base_dir=Path(folder))


@FUZZ
@given(
    width=st.integers(min_value=0, max_value=2**31 - 1),
    height=st.integers(min_value=0, max_value=2**31 - 1),
    cut=st.integers(min_value=8, max_value=80),
    noise=st.binary(max_size=64),
)
def test_any_png_header_decodes_or_is_an_invalid_image(
    width: int, height: int, cut: int, noise: bytes
) -> None:
    for data in (png_declaring(width, height), png_declaring(width, height)[:cut] + noise):
        try:
            decode_image(data, "fuzz.png")
        except InvalidImageError as exc:
            assert "object at 0x" not in exc.what


@pytest.mark.parametrize("payload", [b"{}", b"[]", b"null", b"\x00"])
def test_the_fuzzed_router_answers_known_shapes(payload: bytes) -> None:
    outbox = RecordingOutbox()
    CommandRouter(outbox).handle("unknown", payload)  # type: ignore[arg-type]
    assert outbox.queued[0][0] == "error"
