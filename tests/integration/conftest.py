"""Fixtures of the integration tests: a real Mosquitto broker, ``make_config`` pointed at it
(overriding the service-free one of ``tests/conftest.py``), and the Pi image, built once per
session for every test that checks or boots it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ConfigFactory, config_factory
from tests.support.mosquitto import MosquittoBroker
from tests.support.qemu_image import RPI4B_RECIPE


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


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rpi4b image (built for real: mmdebstrap under qemu-user-static, the rootfs cached
    under $MOLTBOT_IMAGE_CACHE or ~/.cache/moltbot-image, shared with `make image`), or the one
    in $MOLTBOT_TEST_IMAGE_DIR."""
    prebuilt = os.environ.get("MOLTBOT_TEST_IMAGE_DIR")
    if prebuilt:
        return next(Path(prebuilt).glob("*.img"))
    if os.geteuid() != 0:
        pytest.skip("building an image needs root (CI runs as root); or set MOLTBOT_TEST_IMAGE_DIR")
    from images.build import build_image
    from images.rootfs import default_cache_dir

    out = tmp_path_factory.mktemp("image-out")
    return build_image(RPI4B_RECIPE, out, default_cache_dir()).image
