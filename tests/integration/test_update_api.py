"""Over-the-air updates through the local API, in-process (FastAPI TestClient) on a real
appliance: its outbox, its event feed, a bundle served over HTTP by a local server.

``rauc``, ``fw_printenv`` and ``systemctl`` are stand-ins on ``PATH`` replaying captured rauc
1.8 output (``tests/support/rauc.py``): the real RAUC needs its D-Bus service and A/B slots, and
no test may reboot this host.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.service import Appliance
from tests.conftest import ConfigFactory
from tests.support.rauc import (
    FW_ENV_ON_TRIAL,
    INFO,
    INSTALL_OK,
    NO_DBUS_SERVICE,
    STATUS_AFTER_INSTALL,
    STATUS_BOOTED_B,
    BundleServer,
    FakeTools,
    serving,
)

pytestmark = pytest.mark.integration
TOKEN = "t0ken-for-update-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BUNDLE = b"stand-in bundle: the stand-in rauc does not read it" * 2000
SHA = hashlib.sha256(BUNDLE).hexdigest()
DONE = {"installed", "rebooting", "failed"}


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    """Stand-ins first on PATH, for the appliance's RaucClient and reboot."""
    tools = FakeTools(tmp_path / "bin")
    rauc_rules(tools)
    tools.tool("fw_printenv", {"args": [], "stdout": "BOOT_A_LEFT=3\nBOOT_B_LEFT=3\n"})
    tools.tool("systemctl", {"args": ["reboot"]})
    monkeypatch.setenv("PATH", f"{tools.folder}{os.pathsep}{os.environ['PATH']}")
    return tools


def rauc_rules(tools: FakeTools, **install: object) -> None:
    tools.tool(
        "rauc",
        {"args": ["info"], "stdout": INFO},
        {"args": ["status", "--detailed"], "stdout": STATUS_AFTER_INSTALL},
        {"args": ["install"], "stdout": INSTALL_OK, **install},
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BundleServer]:
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "moltbot-2.0.0.raucb").write_bytes(BUNDLE)
    with serving(folder) as running:
        yield running


@pytest.fixture
def system_conf(tmp_path: Path) -> Path:
    """RAUC's system.conf: its presence says the system has A/B slots."""
    path = tmp_path / "system.conf"
    path.write_text("[system]\ncompatible=moltbot-test\nbootloader=uboot\n")
    return path


@pytest.fixture
def appliance(
    make_config: ConfigFactory, tools: FakeTools, system_conf: Path
) -> Iterator[Appliance]:
    config = make_config(
        api={"token": TOKEN},
        inference={"enabled": False},
        updates={"reboot_delay_s": 1, "rauc_system_conf": str(system_conf)},
    )
    built = Appliance(config)
    yield built
    assert built.updates.wait(30)
    built.outbox.close()


@pytest.fixture
def client(appliance: Appliance) -> TestClient:
    return TestClient(create_app(appliance), raise_server_exceptions=False)


def body(server: BundleServer, **overrides: Any) -> dict[str, Any]:
    return {"url": server.url("moltbot-2.0.0.raucb"), "sha256": SHA, "reboot": False} | overrides


def finished_job(client: TestClient, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] | None = client.get("/v1/system/update", headers=AUTH).json()["job"]
        if job is not None and job["state"] in DONE:
            return job
        time.sleep(0.05)
    raise AssertionError(f"the update job did not finish in {timeout_s} s")


def update_events(client: TestClient) -> list[dict[str, Any]]:
    events = client.get("/v1/events?limit=200", headers=AUTH).json()["events"]
    return [event["data"] for event in events if event["kind"] == "update"]


def test_an_update_is_accepted_at_once_and_its_progress_follows_as_update_events(
    client: TestClient, server: BundleServer, tools: FakeTools, appliance: Appliance
) -> None:
    response = client.post("/v1/system/update", json=body(server), headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == "/v1/system/update"
    accepted = response.json()
    assert (accepted["state"], accepted["requested_by"], accepted["sha256"]) == (
        "queued",
        "api",
        SHA,
    )
    job = finished_job(client)
    assert job["job"] == accepted["job"]
    assert (job["state"], job["error"], job["version"], job["slot"]) == (
        "installed",
        None,
        "2.0.0",
        "rootfs.1",
    )
    events = update_events(client)
    assert {event["job"] for event in events} == {accepted["job"]}
    states = [event["state"] for event in events]
    assert states[0] == "queued" and states[-1] == "installed"
    assert states.index("downloading") < states.index("verifying") < states.index("installing")
    assert [e["percent"] for e in events if e["state"] == "installing"][-1] == 100
    queued = [m for m in appliance.outbox.peek(200) if m.kind == "update"]
    assert queued[0].topic == "moltbot/test-site/test-device/update"
    assert ["rauc", "install"] in [call[:2] for call in tools.commands()]
    assert ["systemctl", "reboot"] not in tools.calls()


def test_a_second_update_while_one_runs_is_refused_with_409(
    client: TestClient, server: BundleServer, tools: FakeTools, tmp_path: Path
) -> None:
    release = tmp_path / "let-the-install-finish"
    rauc_rules(tools, wait_for=str(release))
    first = client.post("/v1/system/update", json=body(server), headers=AUTH)
    assert first.status_code == 202
    second = client.post("/v1/system/update", json=body(server), headers=AUTH)
    assert second.status_code == 409, second.text
    refusal = second.json()
    assert (
        refusal["error"] == f"update {first.json()['job']} is still {refusal['error'].split()[-1]}"
    )
    assert "one update at a time" in refusal["hint"]
    release.touch()
    assert finished_job(client)["state"] == "installed"
    third = client.post("/v1/system/update", json=body(server), headers=AUTH)
    assert third.status_code == 202, "accepted again once the first one ended"
    finished_job(client)


def test_with_reboot_the_device_reboots_into_the_new_slot(
    client: TestClient, server: BundleServer, tools: FakeTools
) -> None:
    response = client.post("/v1/system/update", json=body(server, reboot=True), headers=AUTH)
    assert response.status_code == 202
    assert finished_job(client)["state"] == "rebooting"
    deadline = time.monotonic() + 10
    while ["systemctl", "reboot"] not in tools.calls() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tools.calls()[-1] == ["systemctl", "reboot"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
def test_update_routes_need_the_token(
    client: TestClient, server: BundleServer, tools: FakeTools, headers: dict[str, str]
) -> None:
    response = client.post("/v1/system/update", json=body(server), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/v1/system/update", "/v1/system/slots"):
        assert client.get(path, headers=headers).status_code == 401, path
    assert tools.calls() == [], "nothing ran for an unauthenticated request"


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"sha256": "abc"}, "body.sha256"),
        ({"url": "file:///etc/shadow"}, "url"),
        ({"url": "ftp://updates.example/x.raucb"}, "url"),
        ({"reboot": "maybe"}, "body.reboot"),
        ({"channel": "beta"}, "body.channel"),
    ],
)
def test_a_malformed_request_is_refused_with_422_and_starts_nothing(
    client: TestClient,
    server: BundleServer,
    tools: FakeTools,
    changes: dict[str, Any],
    where: str,
) -> None:
    response = client.post("/v1/system/update", json=body(server, **changes), headers=AUTH)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert where in f"{answer['error']} {answer['where']}"
    assert client.get("/v1/system/update", headers=AUTH).json()["job"] is None
    assert tools.calls() == []


def test_a_bundle_with_another_hash_fails_the_job_and_says_why(
    client: TestClient, server: BundleServer, tools: FakeTools
) -> None:
    wrong = hashlib.sha256(b"another bundle").hexdigest()
    assert (
        client.post("/v1/system/update", json=body(server, sha256=wrong), headers=AUTH).status_code
        == 202
    )
    job = finished_job(client)
    assert job["state"] == "failed"
    assert "sha256" in job["error"]
    assert update_events(client)[-1]["state"] == "failed"
    assert [call for call in tools.calls() if call[0] == "rauc"] == [], "nothing was installed"


def test_slots_shows_what_rauc_and_u_boot_say(client: TestClient, tools: FakeTools) -> None:
    tools.tool("rauc", {"args": ["status", "--detailed"], "stdout": STATUS_BOOTED_B})
    tools.tool("fw_printenv", {"args": [], "stdout": FW_ENV_ON_TRIAL})
    slots = client.get("/v1/system/slots", headers=AUTH)
    assert slots.status_code == 200, slots.text
    report = slots.json()
    assert (report["booted"], report["boot_primary"]) == ("B", "rootfs.1")
    assert report["slots"][0]["attempts_left"] == 2


def test_slots_without_the_rauc_service_is_503_with_a_hint(
    client: TestClient, tools: FakeTools
) -> None:
    tools.tool("rauc", {"args": ["status"], "stderr": NO_DBUS_SERVICE, "rc": 1})
    response = client.get("/v1/system/slots", headers=AUTH)
    assert response.status_code == 503
    assert "rauc status failed" in response.json()["error"]
    assert "systemctl status rauc" in response.json()["hint"]


def test_a_system_without_a_b_slots_refuses_updates_with_409_before_fetching_anything(
    client: TestClient, server: BundleServer, tools: FakeTools, system_conf: Path
) -> None:
    system_conf.unlink()
    response = client.post("/v1/system/update", json=body(server), headers=AUTH)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "no A/B slots here: RAUC has no system.conf"
    assert response.json()["where"] == str(system_conf)
    slots = client.get("/v1/system/slots", headers=AUTH)
    assert slots.status_code == 409
    assert client.get("/v1/system/update", headers=AUTH).json()["job"] is None
    assert tools.calls() == []


def test_openapi_documents_the_update_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/v1/system/update"])
    assert "202" in paths["/v1/system/update"]["post"]["responses"]
    assert "409" in paths["/v1/system/update"]["post"]["responses"]
    assert "/v1/system/slots" in paths
