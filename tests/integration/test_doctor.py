"""``moltbot doctor`` against a real Mosquitto: a Pi with its model and a reachable broker
passes every check that can pass on this host."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.doctor import Status, run_doctor
from tests.conftest import ConfigFactory
from tests.support.doctor import checks_by_name, install_model, make_pi_root

pytestmark = pytest.mark.integration


@pytest.fixture
def pi_root(tmp_path: Path) -> Path:
    return make_pi_root(tmp_path / "root")


def test_doctor_detects_the_pi_and_passes_with_model_and_broker(
    make_config: ConfigFactory, data_dir: Path, pi_root: Path
) -> None:
    install_model(data_dir)
    report = run_doctor(make_config(), root=pi_root, machine="aarch64")
    checks = checks_by_name(report)
    assert report.board == "rpi4b"
    assert checks["board"].status == Status.OK
    assert checks["cpu"].status == Status.OK
    assert checks["models"].status == Status.OK
    assert "sha256:" in checks["models"].detail
    assert checks["mqtt_broker"].status == Status.OK
    assert checks["tensorrt"].status == Status.SKIP
    assert checks["inference_backend"].status == Status.OK
    assert checks["inference_backend"].data["backend"] == "ort-cpu"
    assert report.worst() != Status.FAIL
