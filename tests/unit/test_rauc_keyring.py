"""RAUC's keyring as both image kinds install it (images/ab_slots.py install_keyring): the
update CA certificate goes in as given; a private key, or no file, is refused with what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.ab_slots import KEYRING, install_keyring
from images.run import ToolError

CERTIFICATE = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def test_the_ca_certificate_is_installed_readable_by_all(tmp_path: Path) -> None:
    keyring = tmp_path / "ca.cert.pem"
    keyring.write_text(CERTIFICATE)
    install_keyring(tmp_path / "root", keyring)
    assert (tmp_path / "root" / KEYRING).read_text() == CERTIFICATE
    assert (tmp_path / "root" / KEYRING).stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("header", ["PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"])
def test_a_keyring_with_any_private_key_is_refused_before_anything_is_written(
    tmp_path: Path, header: str
) -> None:
    keyring = tmp_path / "ca.cert.pem"
    keyring.write_text(f"{CERTIFICATE}-----BEGIN {header}-----\nMIIfake\n-----END {header}-----\n")
    with pytest.raises(ToolError, match="holds a private key") as caught:
        install_keyring(tmp_path / "root", keyring)
    assert caught.value.hint is not None and "ca.cert.pem" in caught.value.hint
    assert not (tmp_path / "root" / KEYRING).exists()


def test_a_missing_keyring_says_how_to_make_or_pass_one(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="is missing") as caught:
        install_keyring(tmp_path / "root", tmp_path / "none.pem")
    assert caught.value.hint is not None
    assert "keys init" in caught.value.hint and "--update-keys" in caught.value.hint
