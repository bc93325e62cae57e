"""A throw-away PKI made with openssl at test time: a CA, a server and a client certificate."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        key.name,
        "-out",
        cert.name,
        cwd=directory,
    )
    return cert, key


def issue(directory: Path, name: str, ca: tuple[Path, Path], *, server: bool) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".crt"))
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        key.name,
        "-out",
        csr.name,
        cwd=directory,
    )
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        if server
        else "extendedKeyUsage=clientAuth\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        csr.name,
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        extensions.name,
        "-out",
        cert.name,
        cwd=directory,
    )
    return cert, key


def make_pki(directory: Path) -> Pki:
    ca = make_ca(directory, "test-ca")
    server = issue(directory, "broker", ca, server=True)
    client = issue(directory, "device", ca, server=False)
    return Pki(ca[0], server[0], server[1], client[0], client[1])
