"""Hostile inputs (issue 13): frames, WAVs, model folders, site files, recipes, request bodies and
MQTT command payloads. Each case asserts the exact error (class or HTTP status and message) and
that the appliance still serves afterwards. Real Pillow, ONNX Runtime, FastAPI and SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.api.guard import MAX_BODY_BYTES
from edge.config.loading import load_config
from edge.errors import ConfigError, ImageTooLargeError, InvalidImageError, ModelRejectedError
from edge.inference.preprocess import MAX_PIXELS, decode_image
from edge.inference.registry import ModelRegistry
from edge.inference.service import InferenceService
from edge.service import Appliance
from edge.triggers.pipeline import TriggerPipeline
from edge.triggers.sources import WatchedFolder
from edge.uplink.commands import CommandRouter
from images.recipe import RecipeError, load_recipe
from tests.conftest import ConfigFactory
from tests.support.hostile import (
    classifier,
    constant_of_shape_model,
    external_tensor_model,
    npy_bytes,
    png_declaring,
    wav_bytes,
    write_version,
)
from tests.support.models import installed_registry, write_frames

pytestmark = pytest.mark.integration
TOKEN = "hostile-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ERROR_KEYS = {"error", "where", "hint"}


@pytest.fixture
def appliance(make_config: ConfigFactory) -> Iterator[Appliance]:
    config = make_config(
        api={"token": TOKEN, "max_upload_bytes": 256 * 1024},
        voice={"enabled": False},
        inference={"precision": "fp32"},
    )
    installed_registry(config.paths().model_dir)
    built = Appliance(config)
    built.load_model()
    yield built
    built.outbox.close()


@pytest.fixture
def client(appliance: Appliance) -> TestClient:
    return TestClient(create_app(appliance), raise_server_exceptions=False)


@pytest.fixture
def good_png(tmp_path: Path) -> bytes:
    return write_frames(tmp_path / "frames", per_label=1, seed=5)["scratch"][0].read_bytes()


def still_serves(client: TestClient, png: bytes) -> None:
    """The appliance answers health, readiness and a real inference after the hostile input."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200, client.get("/readyz").text
    answer = client.post("/v1/infer", content=png, headers=AUTH | {"Content-Type": "image/png"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "scratch"


# -- frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error_start"),
    [
        (png_declaring(20_000, 20_000), "image is too large to decode"),  # Pillow's error
        (png_declaring(10_000, 10_000), "image is too large to decode"),  # Pillow's warning
        (png_declaring(7_000, 7_000), "image is too large to decode"),  # our own limit
        (png_declaring(1, 50_000_000), "image is too large to decode"),
        (png_declaring(64, 64)[:40], "not a readable image"),  # truncated
        (b"GIF89a-not-really", "not a readable image: not a format we decode"),
        (os.urandom(4096), "not a readable image"),
        (png_declaring(0, 0), "not a readable image"),
    ],
    ids=["20k-bomb", "10k-bomb", "7k-over-limit", "1x50M", "truncated", "gif-junk", "noise", "0x0"],
)
def test_hostile_frames_get_422_naming_the_problem_and_the_appliance_still_serves(
    client: TestClient, good_png: bytes, body: bytes, error_start: str
) -> None:
    answer = client.post("/v1/infer", content=body, headers=AUTH | {"Content-Type": "image/png"})
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert set(error) == ERROR_KEYS
    assert error["error"].startswith(error_start)
    assert "object at 0x" not in error["error"]
    if "too large" in error_start:
        assert str(MAX_PIXELS) in error["error"]
    still_serves(client, good_png)


def test_a_decompression_bomb_is_refused_before_any_pixel_is_decoded() -> None:
    with pytest.raises(ImageTooLargeError, match=f"over the limit of {MAX_PIXELS} pixels"):
        decode_image(png_declaring(100_000, 100_000), "bomb.png")
    with pytest.raises(InvalidImageError) as refused:
        decode_image(b"\x89PNG\r\n\x1a\nshort", "short.png")
    assert refused.value.where == "short.png"


def test_hostile_files_in_the_watched_folder_are_rejected_with_a_reason_and_the_next_frame_runs(
    appliance: Appliance, tmp_path: Path, good_png: bytes
) -> None:
    """The bomb that used to crash-loop the trigger service: now it moves to rejected/ with its
    reason, and so do a symlink out of the folder and an oversized file; the good frame after
    them is processed."""
    watch = tmp_path / "incoming"
    folder = WatchedFolder(watch, max_frame_bytes=512 * 1024)
    (watch / "a-bomb.png").write_bytes(png_declaring(20_000, 20_000))
    (watch / "b-link.png").symlink_to("/etc/passwd")
    (watch / "c-huge.png").write_bytes(b"\0" * (600 * 1024))
    (watch / "d-noise.png").write_bytes(os.urandom(2048))
    time.sleep(0.02)
    (watch / "z-good.png").write_bytes(good_png)
    assert appliance.pipeline is not None and appliance.inference is not None
    pipeline = TriggerPipeline(appliance.config.triggers, appliance.inference, appliance.outbox)
    stop = threading.Event()
    worker = threading.Thread(target=pipeline.run_folder, args=(folder, stop))
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not (watch / "done" / "z-good.png").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(10)
    assert not worker.is_alive()
    assert (watch / "done" / "z-good.png").exists()
    rejected = watch / "rejected"
    reasons = {
        name: (rejected / f"{name}.reason").read_text()
        for name in ("a-bomb.png", "b-link.png", "c-huge.png", "d-noise.png")
    }
    assert f"over the limit of {MAX_PIXELS} pixels" in reasons["a-bomb.png"]
    assert "symbolic link" in reasons["b-link.png"]
    assert "over the frame size limit" in reasons["c-huge.png"]
    assert "not a readable image" in reasons["d-noise.png"]
    assert (rejected / "b-link.png").is_symlink()  # moved, never followed
    assert pipeline.frames_total == 1
    assert folder.rejected_total == 4


def test_a_service_that_keeps_failing_is_not_ready_and_shows_in_metrics(
    appliance: Appliance, client: TestClient
) -> None:
    def crashes() -> None:
        raise RuntimeError("boom on a frame")

    async def crash_loop() -> None:
        task = asyncio.create_task(appliance._supervise("triggers", crashes))
        await asyncio.sleep(0.3)
        appliance._stop.set()
        await task

    asyncio.run(crash_loop())
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["triggers"].startswith("failing: boom on a frame (1 restart")
    metrics = client.get("/metrics").text
    assert 'moltbot_service_up{service="triggers"} 0.0' in metrics
    assert 'moltbot_service_restarts_total{service="triggers"} 1.0' in metrics


# -- WAV uploads ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error_start"),
    [
        (b"", "empty body: send a WAV file"),
        (b"RIFF\xff\xff\xff\x7fWAVEfmt garbage", "not a readable WAV file"),
        (wav_bytes()[:30], "not a readable WAV file"),
        (wav_bytes(rate=4000), "unsupported WAV: 4000 Hz"),
        (wav_bytes(width=3), "unsupported WAV: 24-bit"),
        (png_declaring(20_000, 20_000), "not a readable WAV file"),
    ],
    ids=["empty", "garbage", "truncated", "4kHz", "24-bit", "png"],
)
def test_hostile_wavs_get_422_naming_the_problem_and_the_appliance_still_serves(
    make_config: ConfigFactory, good_png: bytes, body: bytes, error_start: str
) -> None:
    from tests.integration.test_voice import KOREAN_INTENTS
    from tests.support.speech import KOREAN_MODEL

    config = make_config(
        api={"token": TOKEN},
        voice={"enabled": True, "microphone": False, "model_dir": str(KOREAN_MODEL)}
        | {"intents": KOREAN_INTENTS},
        inference={"precision": "fp32"},
    )
    installed_registry(config.paths().model_dir)
    appliance = Appliance(config)
    appliance.load_model()
    client = TestClient(create_app(appliance), raise_server_exceptions=False)
    try:
        answer = client.post("/v1/asr", content=body, headers=AUTH | {"Content-Type": "audio/wav"})
        assert answer.status_code == 422, answer.text
        assert set(answer.json()) == ERROR_KEYS
        assert answer.json()["error"].startswith(error_start)
        still_serves(client, good_png)
    finally:
        appliance.outbox.close()


# -- request bodies -------------------------------------------------------------------------


def test_an_unauthenticated_body_is_answered_401_before_one_byte_of_it_is_read(
    appliance: Appliance,
) -> None:
    """Driven at the ASGI level, so the test sees every read of the body."""
    app = create_app(appliance)
    reads = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * (1 << 20), "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for content_type in (b"application/json", b"text/plain"):
        sent.clear()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/models/defect/activate",
            "raw_path": b"/v1/models/defect/activate",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", content_type), (b"content-length", b"52428800")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8080),
        }
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == 401
        body = json.loads(sent[1]["body"])
        assert body["error"] == "missing or wrong bearer token"
        assert body["where"] == "Authorization header"
    assert reads == 0


def test_every_body_has_a_limit_and_auth_comes_first(client: TestClient, good_png: bytes) -> None:
    big = b"{" + b" " * (50 << 20) + b"}"
    no_token = client.post(
        "/v1/models/defect/activate", content=big, headers={"Content-Type": "application/json"}
    )
    assert no_token.status_code == 401
    not_json = client.post("/v1/models/defect/activate", content=b"\x00\xff garbage")
    assert not_json.status_code == 401  # not a 400 parse error: the token is checked first
    too_big = client.post(
        "/v1/models/defect/activate",
        content=b'{"version": "1", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}',
        headers=AUTH | {"Content-Type": "application/json"},
    )
    assert too_big.status_code == 413
    assert "request body" in too_big.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b" " * 4096

    chunked = client.post(
        "/v1/models/defect/activate",
        content=chunks(),
        headers=AUTH | {"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413
    still_serves(client, good_png)


def test_errors_use_the_documented_shape(client: TestClient) -> None:
    cases = [
        (client.get("/v1/no-such-route", headers=AUTH), 404),
        (client.get("/no-such-route"), 404),
        (client.put("/v1/models", headers=AUTH), 405),
        (client.get("/v1/config"), 401),
        (
            client.post(
                "/v1/models/defect/activate",
                content=b"{not json",
                headers=AUTH | {"Content-Type": "application/json"},
            ),
            422,
        ),
        (client.get("/v1/outbox?peek=100000", headers=AUTH), 422),
        (client.post("/v1/infer", content=b"", headers=AUTH | {"Content-Type": "image/png"}), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == ERROR_KEYS, body
        assert body["error"]
    assert cases[0][0].json()["where"] == "GET /v1/no-such-route"
    assert cases[-1][0].json()["error"] == (
        "empty body: send the image bytes as image/png, image/jpeg or image/bmp"
    )


def test_the_outbox_is_listed_page_by_page_through_the_api(
    client: TestClient, appliance: Appliance
) -> None:
    """Issue 21.3: a backlog larger than one page is listed completely with ?after=."""
    ids = [appliance.outbox.put("telemetry", {"n": n}).id for n in range(260)]
    appliance.outbox.remove_delivered(appliance.outbox.peek(300)[10:20])  # a gap
    expected = ids[:10] + ids[20:]
    listed: list[str] = []
    after: int | None = 0
    pages = 0
    while after is not None:
        page = client.get(f"/v1/outbox?peek=100&after={after}", headers=AUTH).json()
        listed += [m["id"] for m in page["messages"]]
        after = page["next_after"]
        pages += 1
    assert listed == expected
    assert pages == 3
    assert client.get("/v1/outbox?peek=501", headers=AUTH).status_code == 422


# -- model folders --------------------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path, make_config: ConfigFactory) -> InferenceService:
    config = make_config(inference={"precision": "fp32"})
    registry = installed_registry(tmp_path / "registry")
    served = InferenceService(config.inference, registry, ["ort-cpu"], tmp_path / "engines")
    served.start()
    return served


def assert_defect_1_serves(service: InferenceService, png: bytes) -> None:
    assert service.current.loaded.manifest.ref == "defect@1"
    assert service.infer_image(png).label == "scratch"


def test_a_model_with_fewer_outputs_than_labels_is_refused_at_install(tmp_path: Path) -> None:
    folder = write_version(tmp_path / "staging", "2", classifier(outputs=3))
    registry = ModelRegistry(tmp_path / "registry")
    with pytest.raises(ModelRejectedError, match=r"has shape \[-1, 3\], but the manifest lists 4"):
        registry.install(folder)
    assert registry.versions("defect") == []


def test_an_output_shape_only_known_at_run_time_is_refused_at_activation_and_marked(
    service: InferenceService, tmp_path: Path, good_png: bytes
) -> None:
    registry = service.registry
    write_version(registry.root, "2", classifier(outputs=3, declare_output_shape=False))
    with pytest.raises(ModelRejectedError, match=r"has shape \[1, 3\], but the manifest lists 4"):
        service.activate("defect@2")
    assert_defect_1_serves(service, good_png)
    [refused] = [e for e in registry.entries() if e.version == "2"]
    assert refused.refused is not None and "manifest lists 4 labels" in refused.refused
    assert registry.resolve("defect", None)[0] == "1"  # never picked automatically
    with pytest.raises(ModelRejectedError, match="was refused at an earlier activation"):
        service.activate("defect@2")
    fixed = write_version(tmp_path / "staging", "2", classifier(outputs=4))
    registry.install(fixed)  # a fixed copy under the same version clears the mark
    assert service.activate("defect@2").loaded.manifest.ref == "defect@2"


def test_reference_data_of_the_wrong_shape_is_a_clear_refusal(
    service: InferenceService, good_png: bytes
) -> None:
    files = {
        "ref_in.npy": npy_bytes(np.zeros((2, 1, 64, 64), np.float32)),
        "ref_out.npy": npy_bytes(np.zeros((2, 3), np.float32)),
    }
    write_version(
        service.registry.root,
        "2",
        classifier(outputs=4),
        files=files,
        manifest_edit={"reference_input": "ref_in.npy", "fp32.reference_output": "ref_out.npy"},
    )
    with pytest.raises(ModelRejectedError, match=r"have shape \[2, 4\], the reference outputs"):
        service.activate("defect@2")
    assert_defect_1_serves(service, good_png)


@pytest.mark.parametrize(
    ("edit", "files", "match"),
    [
        ({"reference_input": "../../../../etc/passwd"}, {}, "points outside the model folder"),
        ({"reference_input": "/etc/passwd"}, {}, "points outside the model folder"),
        ({"fp32.reference_output": "../1/model.onnx"}, {}, "points outside the model folder"),
        (
            {"reference_input": "pickled.npy", "fp32.reference_output": "out.npy"},
            {
                "pickled.npy": npy_bytes(np.array([{"evil": 1}], dtype=object)),
                "out.npy": npy_bytes(np.zeros((1, 4), np.float32)),
            },
            "reference_input is not a readable .npy array",
        ),
    ],
    ids=["dotdot", "absolute", "sibling-version", "pickle"],
)
def test_manifest_paths_never_leave_the_folder_and_npy_is_never_unpickled(
    service: InferenceService,
    good_png: bytes,
    edit: dict[str, str],
    files: dict[str, bytes],
    match: str,
) -> None:
    folder = write_version(
        service.registry.root, "2", classifier(outputs=4), manifest_edit=edit, files=files
    )
    with pytest.raises(ModelRejectedError, match=match):
        service.activate("defect@2")
    assert_defect_1_serves(service, good_png)
    assert "defect@2" not in {f"defect@{v}" for v, _ in [service.registry.resolve("defect", None)]}
    del folder


def test_a_linked_reference_file_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.npy"
    outside.write_bytes(npy_bytes(np.zeros((1, 1, 64, 64), np.float32)))
    folder = write_version(
        tmp_path / "staging",
        "2",
        classifier(outputs=4),
        manifest_edit={"reference_input": "ref.npy"},
    )
    (folder / "ref.npy").symlink_to(outside)
    with pytest.raises(ModelRejectedError, match=r"'ref\.npy' points outside the model folder"):
        ModelRegistry(tmp_path / "registry").install(folder)


def test_a_model_that_would_allocate_hundreds_of_gb_is_refused_with_the_numbers(
    service: InferenceService, good_png: bytes
) -> None:
    write_version(service.registry.root, "2", constant_of_shape_model([1_000_000, 100_000]))
    with pytest.raises(ModelRejectedError) as refused:
        service.activate("defect@2")
    message = refused.value.what
    assert message.startswith("this model needs at least 373 GiB of memory")
    assert "'big'" in message and "this device has" in message
    assert_defect_1_serves(service, good_png)


def test_an_external_tensor_larger_than_memory_or_its_file_is_refused(
    service: InferenceService, tmp_path: Path, good_png: bytes
) -> None:
    folder = service.registry.root / "defect" / "2"
    folder.mkdir(parents=True)
    write_version(service.registry.root, "2", external_tensor_model(folder, 4_000_000_000))
    with pytest.raises(ModelRejectedError, match="tensor 'huge' declares 16000000000 bytes"):
        service.activate("defect@2")
    folder3 = service.registry.root / "defect" / "3"
    folder3.mkdir(parents=True)
    model = external_tensor_model(folder3, 4_000_000_000)
    model.graph.initializer[-1].external_data[0].value = "../2/weights.bin"
    write_version(service.registry.root, "3", model)
    with pytest.raises(ModelRejectedError, match="points outside the model folder"):
        service.activate("defect@3")
    assert_defect_1_serves(service, good_png)


def test_bad_model_references_are_refused_without_touching_the_file_system(
    service: InferenceService,
) -> None:
    for ref in ("../../etc@1", "defect@../1", "Defect@1", "defect@1/../../x", "@1"):
        with pytest.raises(ModelRejectedError, match="bad model reference"):
            service.activate(ref)


# -- site files and recipes -----------------------------------------------------------------

LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]" for p, n in zip("abcde", "bcdef", strict=True)),
        "voice:",
        "  intents: {start_inspection: *f}",
    ]
)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (LAUGHS, "the configuration is invalid"),
        ("uplink: [\n", "not valid YAML"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("device: {data_dir: 3}\n" * 2, "the configuration is invalid"),
        ("\ufeff\x00\x01binary", "not valid YAML"),
    ],
    ids=["billion-laughs", "unclosed", "python-tag", "list", "duplicate-wrong-type", "binary"],
)
def test_hostile_site_files_are_a_config_error(tmp_path: Path, text: str, match: str) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(text)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=match) as refused:
        load_config(site_file=site, environ={}, system_file=tmp_path / "none.yaml")
    assert time.monotonic() - started < 5
    assert len(str(refused.value)) < 20_000


def test_a_site_file_that_is_not_text_says_so(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="cannot read config file") as refused:
        load_config(site_file=site, environ={}, system_file=tmp_path / "none.yaml")
    assert "UTF-8" in (refused.value.hint or "")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (LAUGHS, "recipe is invalid"),
        ("board: [\n", "recipe is not valid YAML"),
        ("!!python/object/apply:os.system ['true']\n", "recipe is not valid YAML"),
        ("- a list\n", "recipe is invalid"),
    ],
    ids=["billion-laughs", "unclosed", "python-tag", "list"],
)
def test_hostile_recipes_are_a_recipe_error(tmp_path: Path, text: str, match: str) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(RecipeError, match=match):
        load_recipe(recipe, base_dir=tmp_path)


def test_a_recipe_that_is_not_text_is_a_recipe_error(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(RecipeError, match="not UTF-8 text") as caught:
        load_recipe(recipe, base_dir=tmp_path)
    assert caught.value.where == str(recipe)


# -- MQTT command payloads ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\xff\xfe not utf-8", "payload is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "payload is not JSON"),
        (b"1e99999", "must be a JSON object"),
        (b'"just a string"', "must be a JSON object"),
        (b'{"a": NaN}', "unknown command"),
        (b"{" + b'"k":1,' * 100_000 + b'"k":1}', "unknown command"),
    ],
    ids=["not-utf8", "deep-nesting", "huge-number", "string", "nan", "many-keys"],
)
def test_hostile_command_payloads_answer_an_error_event_and_ping_still_works(
    appliance: Appliance, payload: bytes, match: str
) -> None:
    router = CommandRouter(appliance.outbox)
    name = "frobnicate" if match == "unknown command" else "ping"
    router.handle(name, payload)
    [error] = appliance.outbox.peek(10)
    assert error.kind == "error"
    assert match in error.payload["error"]
    router.handle("ping", b"{}")
    assert appliance.outbox.peek(10)[-1].payload["reply"]["pong"] is True
