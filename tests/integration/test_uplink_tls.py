"""TLS to a Mosquitto listener that requires client certificates; certificates from openssl."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.uplink.sync import LinkState
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import open_outbox, running_uplink, wait_until
from tests.support.mosquitto import MosquittoBroker
from tests.support.tls import Pki, make_ca, make_pki

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(
        workdir=tmp_path / "tls-broker",
        listener_options=(
            f"cafile {pki.ca_cert}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            "require_certificate true\ntls_version tlsv1.2\n"
        ),
    )
    broker.start()
    yield broker
    broker.stop()


def tls_settings(broker: MosquittoBroker, ca: Path, pki: Pki) -> dict[str, object]:
    return {
        "host": "localhost",
        "port": broker.port,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 0.5,
        "tls": {
            "enabled": True,
            "ca_file": str(ca),
            "cert_file": str(pki.client_cert),
            "key_file": str(pki.client_key),
        },
    }


def test_events_are_delivered_over_mutual_tls(
    make_config: ConfigFactory, tls_broker: MosquittoBroker, pki: Pki
) -> None:
    config = make_config(uplink=tls_settings(tls_broker, pki.ca_cert, pki))
    outbox = open_outbox(config)
    outbox.put("defect", {"class": "spot"})
    with running_uplink(config, outbox) as uplink:
        assert uplink.wait_drained(15), uplink.last_error
    assert outbox.stats().delivered_total == 1
    outbox.close()


def test_wrong_ca_is_a_clear_error_and_the_data_stays(
    make_config: ConfigFactory, tls_broker: MosquittoBroker, pki: Pki, tmp_path: Path
) -> None:
    other_ca, _ = make_ca(tmp_path / "other", "someone-else")
    config = make_config(uplink=tls_settings(tls_broker, other_ca, pki))
    outbox = open_outbox(config)
    message = outbox.put("defect", {})
    with running_uplink(config, outbox) as uplink:
        wait_until(lambda: uplink.counters.failed_connects_total >= 1, 15, "a TLS failure")
        assert uplink.state == LinkState.REFUSED
        error = uplink.last_error or ""
        assert "TLS handshake" in error
        assert "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error
        assert "uplink.tls.ca_file" in error
    assert [m.id for m in outbox.peek(5)] == [message.id]
    outbox.close()


def test_unreadable_tls_files_are_a_config_error(
    make_config: ConfigFactory, tls_broker: MosquittoBroker, pki: Pki, tmp_path: Path
) -> None:
    config = make_config(uplink=tls_settings(tls_broker, tmp_path / "missing.crt", pki))
    outbox = open_outbox(config)
    with running_uplink(config, outbox) as uplink:
        wait_until(lambda: uplink.counters.failed_connects_total >= 1, 10, "a failure")
        assert "cannot load the TLS files" in (uplink.last_error or "")
    outbox.close()
