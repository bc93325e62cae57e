"""Fixtures of the integration tests: a real Mosquitto broker, and ``make_config`` pointed at it
(overriding the service-free one of ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ConfigFactory, config_factory
from tests.support.mosquitto import MosquittoBroker


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
def make_config(data_dir: Path, mosquitto_session: MosquittoBroker) -> ConfigFactory:
    """Build a valid config rooted in a temporary data dir and pointed at the test broker.

    Keyword arguments are sections: ``make_config(uplink={"protocol": "3.1.1"})``.
    """
    return config_factory(
        data_dir, broker_host=mosquitto_session.host, broker_port=mosquitto_session.port
    )
