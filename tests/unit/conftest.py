"""Unit tests run with no services: the broker fixtures live in ``tests/integration/conftest.py``.

A unit test that asks for one fails here with the reason, rather than quietly starting
Mosquitto (or failing with a bare "fixture not found").

The device code runs on Python 3.10 too (JetPack 6's system Python), the host-side builder
(``images``) needs 3.11+: on 3.10 a test module that imports the builder is reported as skipped
with that reason, and every other one runs.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

BUILDER_NEEDS = (3, 11)
BUILDER_SKIP = (
    "tests the host-side image builder (images/), which needs Python 3.11+; "
    "the device code's tests run on this Python"
)


def imports_the_builder(path: Path) -> bool:
    """Whether the module at ``path`` imports ``images`` anywhere (also inside a function)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        if any(name.split(".")[0] == "images" for name in names):
            return True
    return False


class BuilderTests(pytest.Module):
    """A test module of the builder on a Python the builder does not run on: skipped."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:
        pytest.skip(BUILDER_SKIP, allow_module_level=True)


def pytest_pycollect_makemodule(
    module_path: Path, parent: pytest.Collector
) -> pytest.Module | None:
    if sys.version_info < BUILDER_NEEDS and imports_the_builder(module_path):
        return BuilderTests.from_parent(parent, path=module_path)
    return None


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
