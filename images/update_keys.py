"""Keys for signed update bundles: a development PKI made with ``openssl``, and the files a
bundle is signed with (``moltbot image keys init DIR``, ``moltbot image bundle --keys DIR``).

A key folder holds, by these names:

- ``ca.cert.pem``: the CA certificate. It is the keyring: the only file that goes into an
  image (as RAUC's ``[keyring] path``); a device installs only bundles whose signer it issued.
- ``ca.key.pem``: the CA's private key (0600). Only needed to issue another signing certificate.
- ``signing.key.pem`` (0600) + ``signing.cert.pem``: what ``rauc bundle`` signs with; the
  certificate is issued by the CA, for code signing (see ``SIGNING_EXTENSIONS``).

A plant with its own PKI puts its CA certificate and a signing certificate + key issued by it
into a folder under the same names, without ``ca.key.pem``.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge.errors import InputError
from images.run import run

KEYRING_NAME = "ca.cert.pem"
CA_KEY_NAME = "ca.key.pem"
SIGNING_KEY_NAME = "signing.key.pem"
SIGNING_CERT_NAME = "signing.cert.pem"
README_NAME = "README.txt"
KEY_FILES = (KEYRING_NAME, CA_KEY_NAME, SIGNING_KEY_NAME, SIGNING_CERT_NAME)
PRIVATE_KEY_MODE = 0o600
CERT_MODE = 0o644
DEFAULT_VALIDITY_DAYS = 3650

# What RAUC 1.8's "codesign" purpose (system.conf: [keyring] check-purpose=codesign) asks of a
# chain: the signer has extendedKeyUsage codeSigning (and, when keyUsage is present,
# digitalSignature); a CA in the chain has no extendedKeyUsage, or one that lists codeSigning.
OPENSSL_EXTENSIONS = """\
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[signing]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""
SIGNING_EXTENSIONS = "extendedKeyUsage codeSigning, keyUsage digitalSignature (critical)"

README_TEXT = f"""\
Update signing keys of Moltbot Edge (made by `moltbot image keys init`)
=======================================================================

{KEYRING_NAME}       THE KEYRING. The CA certificate; the only file of this folder that goes
                  into an image. A device installs only bundles signed by a certificate
                  that this CA issued.
{CA_KEY_NAME}        The CA's private key. Needed only to issue a new signing certificate.
{SIGNING_CERT_NAME}  The signing certificate, issued by the CA for code signing.
{SIGNING_KEY_NAME}   Its private key; `moltbot image bundle --keys THIS-FOLDER` signs with it.

Private keys (*.key.pem) never go into an image, a fleet project, a container or a
repository. Keep them on the build host or in a secret store; they are mode 0600.

These keys are for development. A device flashed with this {KEYRING_NAME} accepts only
bundles signed with this {SIGNING_KEY_NAME}: keep the folder as long as such devices exist,
and do not run `keys init --force` on it unless you re-flash them.

Using the plant's own PKI instead
---------------------------------
Make a folder with these three files (no {CA_KEY_NAME}):

  {KEYRING_NAME}       your CA certificate (PEM)
  {SIGNING_CERT_NAME}  a signing certificate issued directly by that CA (PEM), with
                    {SIGNING_EXTENSIONS};
                    RAUC checks it with `check-purpose=codesign`
  {SIGNING_KEY_NAME}   the signing certificate's private key (PEM, unencrypted, mode 0600)

then: moltbot image bundle ROOTFS.ext4 --keys FOLDER --compatible C --version V --out FILE
and build the image with that {KEYRING_NAME} as its keyring.
"""


class UpdateKeysError(InputError):
    """A key folder already holds keys, or lacks a file a bundle is signed with."""


@dataclass(frozen=True)
class SigningFiles:
    """What ``rauc bundle`` signs with, and the keyring its chain must verify against."""

    keyring: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class KeySet:
    """The files ``init_keys`` made."""

    directory: Path
    keyring: Path
    ca_key: Path
    signing: SigningFiles
    readme: Path


def init_keys(
    directory: Path, *, force: bool = False, validity_days: int = DEFAULT_VALIDITY_DAYS
) -> KeySet:
    """Make a CA and a signing key + certificate issued by it in ``directory``, plus README.txt.

    Refuses when ``directory`` already holds any of the key files, unless ``force``. The files
    are made in a private (0700) scratch folder inside ``directory`` and moved into place once
    all of them exist, so a failed openssl step leaves nothing behind and no private key is
    ever readable by others.
    """
    existing = [name for name in KEY_FILES if (directory / name).exists()]
    if existing and not force:
        raise UpdateKeysError(
            f"{directory} already holds update keys ({', '.join(existing)})",
            where=str(directory),
            hint="use them as they are, or pass --force to replace them: devices flashed with "
            f"the old {KEYRING_NAME} then refuse every bundle signed with the new keys",
        )
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".keys-") as scratch_name:
        scratch = Path(scratch_name)  # mode 0700: the keys are private from the start
        _make_pki(scratch, validity_days)
        for name in KEY_FILES:
            os.replace(scratch / name, directory / name)
    readme = directory / README_NAME
    readme.write_text(README_TEXT, encoding="utf-8")
    return KeySet(
        directory=directory,
        keyring=directory / KEYRING_NAME,
        ca_key=directory / CA_KEY_NAME,
        signing=signing_files(directory),
        readme=readme,
    )


def _make_pki(scratch: Path, validity_days: int) -> None:
    extensions = scratch / "extensions.cnf"
    extensions.write_text(OPENSSL_EXTENSIONS, encoding="ascii")
    ca_key, ca_cert = scratch / CA_KEY_NAME, scratch / KEYRING_NAME
    signing_key, signing_cert = scratch / SIGNING_KEY_NAME, scratch / SIGNING_CERT_NAME
    request = scratch / "signing.csr.pem"
    days = str(validity_days)
    _private_key(ca_key)
    run(
        ["openssl", "req", "-new", "-x509", "-key", ca_key, "-sha256", "-days", days,
         "-subj", "/O=Moltbot Edge/CN=Moltbot Edge development update CA",
         "-config", extensions, "-extensions", "ca", "-out", ca_cert],
        step="make the update CA certificate",
    )  # fmt: skip
    _private_key(signing_key)
    run(
        ["openssl", "req", "-new", "-key", signing_key, "-sha256",
         "-subj", "/O=Moltbot Edge/CN=Moltbot Edge development update signing",
         "-config", extensions, "-out", request],
        step="make the signing certificate request",
    )  # fmt: skip
    run(
        ["openssl", "x509", "-req", "-in", request, "-CA", ca_cert, "-CAkey", ca_key,
         "-set_serial", f"0x{secrets.token_hex(16)}", "-sha256", "-days", days,
         "-extfile", extensions, "-extensions", "signing", "-out", signing_cert],
        step="issue the signing certificate",
    )  # fmt: skip
    for key in (ca_key, signing_key):
        key.chmod(PRIVATE_KEY_MODE)
    for cert in (ca_cert, signing_cert):
        cert.chmod(CERT_MODE)


def _private_key(path: Path) -> None:
    run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", path],
        step=f"make the private key {path.name}",
    )  # fmt: skip
    path.chmod(PRIVATE_KEY_MODE)


def signing_files(directory: Path) -> SigningFiles:
    """The keyring, signing certificate and key in ``directory``; refuses when one is missing."""
    files = SigningFiles(
        keyring=directory / KEYRING_NAME,
        cert=directory / SIGNING_CERT_NAME,
        key=directory / SIGNING_KEY_NAME,
    )
    missing = [path.name for path in (files.keyring, files.cert, files.key) if not path.is_file()]
    if missing:
        raise UpdateKeysError(
            f"{directory} lacks {', '.join(missing)}",
            where=str(directory),
            hint=f"make development keys with `moltbot image keys init {directory}`, or put "
            f"your PKI's files there under these names (see {README_NAME} of a keys folder)",
        )
    return files
