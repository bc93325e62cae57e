"""Checking a verity bundle's payload against its signed root hash, as dm-verity would on a device.

A bundle file is ``payload | CMS signature | signature size (8 bytes, big-endian)``; a verity
payload is ``squashfs (4 KiB blocks) | dm-verity hash tree (top level first)``.

``rauc info`` checks only the signed manifest of a verity bundle; a device checks the payload
block by block as it reads it through dm-verity. ``verify_verity_payload`` does that check on
the host, in one pass: it recomputes the hash tree of the payload's data blocks and compares
tree and root with the hash tree stored in the payload and the root hash the signed manifest
holds (``images.update_bundle`` reads and verifies that manifest first).
"""

from __future__ import annotations

import configparser
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from images.bundle_errors import BundleDamagedError

VERITY_BLOCK_BYTES = 4096
TRAILER_BYTES = 8


@dataclass(frozen=True)
class BundleLayout:
    size_bytes: int
    payload_bytes: int
    signature_bytes: int


def bundle_layout(size_bytes: int, trailer: bytes, *, where: str) -> BundleLayout:
    """Where payload and signature lie in a bundle of ``size_bytes`` ending in ``trailer``."""
    signature_bytes = int.from_bytes(trailer, "big") if len(trailer) == TRAILER_BYTES else 0
    payload_bytes = size_bytes - TRAILER_BYTES - signature_bytes
    if size_bytes <= TRAILER_BYTES or signature_bytes == 0 or payload_bytes <= 0:
        raise BundleDamagedError(
            f"not a complete RAUC bundle ({size_bytes} bytes; its last 8 bytes name a "
            f"{signature_bytes}-byte signature)",
            where=where,
            hint="the file is truncated or is not a bundle: copy or download it again",
        )
    return BundleLayout(size_bytes, payload_bytes, signature_bytes)


def verity_tree(data_blocks: Iterable[bytes | memoryview], salt: bytes) -> tuple[bytes, bytes]:
    """The dm-verity root hash of ``data_blocks`` (4 KiB each) and the hash area RAUC stores
    after them: sha256 over salt + block, format 1, levels from the top down."""
    digests = _digests(data_blocks, salt)
    if len(digests) == 1:
        return digests[0], b""  # one data block: the root is its hash, there is no tree
    levels: list[bytes] = []
    while True:
        level = _pack(digests)
        levels.append(level)
        if len(level) == VERITY_BLOCK_BYTES:
            break
        digests = _digests(_blocks_of(level), salt)
    root = _digests([levels[-1]], salt)[0]
    return root, b"".join(reversed(levels))


def _digests(blocks: Iterable[bytes | memoryview], salt: bytes) -> list[bytes]:
    salted = hashlib.sha256(salt)
    found = []
    for block in blocks:
        digest = salted.copy()
        digest.update(block)
        found.append(digest.digest())
    return found


def _pack(digests: list[bytes]) -> bytes:
    joined = b"".join(digests)
    return joined + bytes(-len(joined) % VERITY_BLOCK_BYTES)


def _blocks_of(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(data), VERITY_BLOCK_BYTES):
        yield view[start : start + VERITY_BLOCK_BYTES]


def read_layout(bundle: Path) -> BundleLayout:
    """Where payload and signature lie in the bundle file ``bundle``."""
    size_bytes = bundle.stat().st_size
    with bundle.open("rb") as stream:
        stream.seek(max(size_bytes - TRAILER_BYTES, 0))
        trailer = stream.read(TRAILER_BYTES)
    return bundle_layout(size_bytes, trailer, where=str(bundle))


def verify_verity_payload(
    bundle: Path, layout: BundleLayout, manifest: configparser.ConfigParser
) -> None:
    """Refuse ``bundle`` (``BundleDamagedError``) unless its payload's hash tree and root are
    those of its data blocks and the root is the ``verity-hash`` of the signed ``manifest``."""
    where = str(bundle)
    try:
        root = bytes.fromhex(manifest.get("bundle", "verity-hash"))
        salt = bytes.fromhex(manifest.get("bundle", "verity-salt"))
        hash_bytes = manifest.getint("bundle", "verity-size")
    except (configparser.Error, ValueError) as exc:
        raise BundleDamagedError(
            f"the signed manifest lacks readable verity fields ({exc})",
            where=where,
            hint="make the bundle again with `moltbot image bundle`",
        ) from exc
    data_bytes = layout.payload_bytes - hash_bytes
    if data_bytes <= 0 or data_bytes % VERITY_BLOCK_BYTES or hash_bytes % VERITY_BLOCK_BYTES:
        raise BundleDamagedError(
            f"the payload ({layout.payload_bytes} bytes) does not fit the signed hash tree "
            f"size ({hash_bytes} bytes)",
            where=where,
            hint="the file was cut or extended: copy or download it again",
        )
    with bundle.open("rb") as stream:
        computed_root, computed_tree = verity_tree(
            _read_blocks(stream, data_bytes // VERITY_BLOCK_BYTES, where), salt
        )
        stored_tree = stream.read(hash_bytes)
    if computed_tree != stored_tree or computed_root != root:
        raise BundleDamagedError(
            "the bundle's payload does not match the hash tree its signature covers",
            where=where,
            hint="the file was altered or damaged: copy or download it again; do not install it",
        )


def _read_blocks(stream: BinaryIO, count: int, where: str) -> Iterator[memoryview]:
    chunk_blocks = 256  # 1 MiB per read
    left = count
    while left:
        want = min(left, chunk_blocks) * VERITY_BLOCK_BYTES
        chunk = stream.read(want)
        if len(chunk) != want:
            raise BundleDamagedError(
                "the bundle ended inside its payload", where=where, hint="copy it again"
            )
        yield from _blocks_of(chunk)
        left -= want // VERITY_BLOCK_BYTES
