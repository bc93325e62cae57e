"""Fixtures every test can use: a real Mosquitto broker, a data dir, a config factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import MoltbotConfig
from tests.support.mosquitto import MosquittoBroker

ConfigFactory = Callable[..., MoltbotConfig]


@pytest.fixture(scope="session")
def mosquitto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto(mosquitto_session: MosquittoBroker) -> Iterator[MosquittoBroker]:
    """The session's broker, guaranteed running at the start and end of each test."""
    mosquitto_session.start()
    yield mosquitto_session
    mosquitto_session.start()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def _deep_update(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


@pytest.fixture
def make_config(data_dir: Path, mosquitto_session: MosquittoBroker) -> ConfigFactory:
    """Build a valid config rooted in a temporary data dir and pointed at the test broker.

    Keyword arguments are sections: ``make_config(uplink={"protocol": "3.1.1"})``.
    """

    def factory(**sections: dict[str, Any]) -> MoltbotConfig:
        base: dict[str, Any] = {
            "device": {"id": "test-device", "site": "test-site", "data_dir": str(data_dir)},
            "uplink": {"host": mosquitto_session.host, "port": mosquitto_session.port},
            "api": {"host": "127.0.0.1"},
        }
        return MoltbotConfig.model_validate(_deep_update(base, sections))

    return factory
