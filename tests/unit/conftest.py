"""Unit tests run with no services: the broker fixtures live in ``tests/integration/conftest.py``.

A unit test that asks for one fails here with the reason, rather than quietly starting
Mosquitto (or failing with a bare "fixture not found").
"""

from __future__ import annotations

import pytest

NO_SERVICES = (
    "unit tests run without services; a test that needs a real Mosquitto belongs in "
    "tests/integration/ (its conftest provides the broker fixtures)"
)


@pytest.fixture(scope="session")
def mosquitto_session() -> None:
    pytest.fail(NO_SERVICES)


@pytest.fixture
def mosquitto() -> None:
    pytest.fail(NO_SERVICES)
