"""Fixtures every test can use: a data dir and a config factory. Neither starts a service: the
factory points the uplink at a loopback port where nothing listens. ``tests/integration``
overrides ``make_config`` to point it at a real Mosquitto (its conftest holds the broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.config import MoltbotConfig
from tests.support.mosquitto import free_port

ConfigFactory = Callable[..., MoltbotConfig]


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


def config_factory(data_dir: Path, *, broker_host: str, broker_port: int) -> ConfigFactory:
    """A factory of valid configs rooted in ``data_dir`` with the uplink at the given broker.

    Keyword arguments are sections: ``make_config(uplink={"protocol": "3.1.1"})``.
    """

    def factory(**sections: dict[str, Any]) -> MoltbotConfig:
        base: dict[str, Any] = {
            "device": {"id": "test-device", "site": "test-site", "data_dir": str(data_dir)},
            "uplink": {"host": broker_host, "port": broker_port},
            "api": {"host": "127.0.0.1"},
        }
        return MoltbotConfig.model_validate(_deep_update(base, sections))

    return factory


@pytest.fixture
def make_config(data_dir: Path) -> ConfigFactory:
    """Configs whose uplink points at a free loopback port: no broker, connections refused."""
    return config_factory(data_dir, broker_host="127.0.0.1", broker_port=free_port())
