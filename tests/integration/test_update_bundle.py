"""Signed RAUC update bundles made and checked with the real tools (Debian 12's rauc 1.8,
openssl, mksquashfs, mkfs.ext4): update keys, bundles, and every refusal a device would make,
made on the host before a bundle goes anywhere."""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from images.bundle_errors import (
    BundleCompatibleError,
    BundleDamagedError,
    BundleInputError,
    BundleSignatureError,
)
from images.bundle_verity import bundle_layout, verity_tree
from images.update_bundle import BundleInfo, create_bundle, inspect_bundle
from images.update_keys import (
    CA_KEY_NAME,
    KEYRING_NAME,
    SIGNING_CERT_NAME,
    SIGNING_KEY_NAME,
    KeySet,
    SigningFiles,
    UpdateKeysError,
    init_keys,
)

TOOLS = {
    "rauc": "rauc",
    "openssl": "openssl",
    "mksquashfs": "squashfs-tools",
    "mkfs.ext4": "e2fsprogs",
}
MISSING = [
    f"{tool} (apt-get install {package})"
    for tool, package in TOOLS.items()
    if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None
]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}"),
]
COMPATIBLE = "moltbot-rpi4b-test-appliance"


def make_rootfs(folder: Path, *, blob_bytes: int = 600_000) -> Path:
    """A small ext4 image; the random blob makes the squashfs more than 128 blocks, so the
    verity hash tree has two levels."""
    tree = folder / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("moltbot\n")
    (tree / "etc" / "os-release").write_text('PRETTY_NAME="Moltbot Edge test"\n')
    if blob_bytes:
        (tree / "blob.bin").write_bytes(random.Random(7).randbytes(blob_bytes))
    image = folder / "rootfs.ext4"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "4M"],
        check=True,
        capture_output=True,
    )
    return image


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return init_keys(tmp_path_factory.mktemp("keys") / "update-keys")


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return init_keys(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_rootfs(tmp_path_factory.mktemp("rootfs"))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, keys: KeySet, rootfs: Path) -> BundleInfo:
    return create_bundle(
        rootfs,
        out=tmp_path_factory.mktemp("bundle") / "update.raucb",
        compatible=COMPATIBLE,
        version="1.4.0",
        signing=keys.signing,
        build_id="test-build-7",
        description="test bundle",
    )


def altered(
    made: BundleInfo, folder: Path, *, flip_at: int | None = None, cut_at: int | None = None
) -> Path:
    data = bytearray(made.path.read_bytes())
    if flip_at is not None:
        data[flip_at] ^= 0x5A
    if cut_at is not None:
        del data[cut_at:]
    target = folder / "altered.raucb"
    target.write_bytes(bytes(data))
    return target


def signature_span(bundle: Path) -> tuple[int, int]:
    """(start, end) of the CMS signature inside the bundle."""
    data = bundle.read_bytes()
    layout = bundle_layout(len(data), data[-8:], where=str(bundle))
    return layout.payload_bytes, layout.payload_bytes + layout.signature_bytes


def rauc_text_info(bundle: Path, keyring: Path) -> dict[str, str]:
    conf = bundle.with_name("check.conf")
    conf.write_text("[system]\ncompatible=x\nbootloader=noop\n[keyring]\ncheck-purpose=codesign\n")
    shown = subprocess.run(
        ["rauc", "--conf", str(conf), "info", "--keyring", str(keyring), str(bundle)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    conf.unlink()
    return dict(re.findall(r"^\s*(Bundle Format|Verity \w+):\s*'?([^'\n]*)'?$", shown, re.M))


# --- a good bundle -------------------------------------------------------------------------


def test_bundle_verifies_with_its_keyring_and_reports_what_it_holds(
    made: BundleInfo, keys: KeySet, rootfs: Path
) -> None:
    info = inspect_bundle(made.path, keyring=keys.keyring, compatible=COMPATIBLE)
    assert info == made
    assert (info.compatible, info.version, info.format) == (COMPATIBLE, "1.4.0", "verity")
    assert (info.build, info.description) == ("test-build-7", "test bundle")
    assert len(info.images) == 1
    image = info.images[0]
    assert (image.slot_class, image.filename) == ("rootfs", "rootfs.ext4")
    assert image.sha256 == hashlib.sha256(rootfs.read_bytes()).hexdigest()
    assert image.size_bytes == rootfs.stat().st_size
    assert info.size_bytes == made.path.stat().st_size
    assert not list(made.path.parent.glob(".*")), "the scratch folder was left behind"


def test_payload_check_computes_the_same_two_level_hash_tree_rauc_signed(
    made: BundleInfo, keys: KeySet
) -> None:
    shown = rauc_text_info(made.path, keys.keyring)
    assert shown["Bundle Format"] == "verity"
    hash_bytes = int(shown["Verity Size"])
    assert hash_bytes == 3 * 4096, "expected a two-level tree: 2 level-0 blocks + 1 top block"
    data = made.path.read_bytes()
    payload_end, _ = signature_span(made.path)
    squashfs = data[: payload_end - hash_bytes]
    blocks = [squashfs[at : at + 4096] for at in range(0, len(squashfs), 4096)]
    root, tree = verity_tree(blocks, bytes.fromhex(shown["Verity Salt"]))
    assert root.hex() == shown["Verity Hash"]
    assert tree == data[payload_end - hash_bytes : payload_end]


# --- refusals ------------------------------------------------------------------------------


def test_bundle_signed_by_another_ca_is_refused(
    tmp_path: Path, keys: KeySet, other_keys: KeySet, rootfs: Path
) -> None:
    foreign = create_bundle(
        rootfs,
        out=tmp_path / "foreign.raucb",
        compatible=COMPATIBLE,
        version="9.9.9",
        signing=other_keys.signing,
    )
    before = sorted(tmp_path.iterdir())
    with pytest.raises(BundleSignatureError) as refused:
        inspect_bundle(foreign.path, keyring=keys.keyring, compatible=COMPATIBLE)
    assert "not signed by a certificate that" in refused.value.what
    assert "unable to get local issuer certificate" in refused.value.what
    assert refused.value.where == str(foreign.path)
    assert sorted(tmp_path.iterdir()) == before, "a refused check wrote something"


def test_signing_with_a_certificate_the_keyring_did_not_issue_makes_no_bundle(
    tmp_path: Path, keys: KeySet, other_keys: KeySet, rootfs: Path
) -> None:
    mixed = SigningFiles(
        keyring=keys.keyring, cert=other_keys.signing.cert, key=other_keys.signing.key
    )
    with pytest.raises(UpdateKeysError) as refused:
        create_bundle(
            rootfs, out=tmp_path / "mixed.raucb", compatible=COMPATIBLE, version="1", signing=mixed
        )
    assert "is not issued by the keyring" in refused.value.what
    assert list(tmp_path.iterdir()) == []


def test_certificate_without_code_signing_purpose_makes_no_bundle(
    tmp_path: Path, keys: KeySet, rootfs: Path
) -> None:
    """The CA certificate signs for itself: it chains to the keyring, but is no code signer."""
    ca_as_signer = SigningFiles(keyring=keys.keyring, cert=keys.keyring, key=keys.ca_key)
    with pytest.raises(UpdateKeysError) as refused:
        create_bundle(
            rootfs,
            out=tmp_path / "ca.raucb",
            compatible=COMPATIBLE,
            version="1",
            signing=ca_as_signer,
        )
    assert "not a code-signing certificate" in refused.value.what
    assert "unsuitable certificate purpose" in refused.value.what
    assert not (tmp_path / "ca.raucb").exists()


def test_bundle_for_other_devices_is_refused(made: BundleInfo, keys: KeySet) -> None:
    with pytest.raises(BundleCompatibleError) as refused:
        inspect_bundle(made.path, keyring=keys.keyring, compatible="moltbot-jetson-agx-orin-x")
    assert refused.value.what == (
        f"the bundle is for {COMPATIBLE!r}, not 'moltbot-jetson-agx-orin-x'"
    )


@pytest.mark.parametrize(
    "cut", ["10 bytes", "one block", "half", "payload end", "no size", "last byte"]
)
def test_truncated_bundle_is_refused(
    tmp_path: Path, made: BundleInfo, keys: KeySet, cut: str
) -> None:
    size = made.size_bytes
    payload_end, signature_end = signature_span(made.path)
    at = {
        "10 bytes": 10,
        "one block": 4096,
        "half": size // 2,
        "payload end": payload_end,
        "no size": signature_end,
        "last byte": size - 1,
    }[cut]
    bundle = altered(made, tmp_path, cut_at=at)
    with pytest.raises(BundleDamagedError) as refused:
        inspect_bundle(bundle, keyring=keys.keyring)
    assert refused.value.where == str(bundle)
    assert "truncated" in refused.value.what or "not a complete RAUC bundle" in refused.value.what


@pytest.mark.parametrize("where", ["superblock", "middle", "last data block", "hash tree"])
def test_byte_flipped_in_the_payload_is_refused(
    tmp_path: Path, made: BundleInfo, keys: KeySet, where: str
) -> None:
    payload_end, _ = signature_span(made.path)
    hash_start = payload_end - 3 * 4096
    at = {
        "superblock": 1,
        "middle": hash_start // 2,
        "last data block": hash_start - 100,
        "hash tree": hash_start + 40,
    }[where]
    bundle = altered(made, tmp_path, flip_at=at)
    with pytest.raises(BundleDamagedError) as refused:
        inspect_bundle(bundle, keyring=keys.keyring, compatible=COMPATIBLE)
    assert refused.value.what == (
        "the bundle's payload does not match the hash tree its signature covers"
    )


@pytest.mark.parametrize("where", ["first byte", "middle", "near the end", "size field"])
def test_byte_flipped_in_the_signature_is_refused(
    tmp_path: Path, made: BundleInfo, keys: KeySet, where: str
) -> None:
    start, end = signature_span(made.path)
    at = {
        "first byte": start,
        "middle": (start + end) // 2,
        "near the end": end - 20,
        "size field": made.size_bytes - 1,
    }[where]
    bundle = altered(made, tmp_path, flip_at=at)
    with pytest.raises((BundleSignatureError, BundleDamagedError)) as refused:
        inspect_bundle(bundle, keyring=keys.keyring, compatible=COMPATIBLE)
    assert refused.value.where == str(bundle)
    assert any(
        reason in refused.value.what
        for reason in (
            "the bundle's signature does not verify",
            "the bundle is truncated or damaged",
            "not a complete RAUC bundle",
        )
    ), refused.value.what


def test_empty_root_file_system_is_refused_with_rauc_s_reason(tmp_path: Path, keys: KeySet) -> None:
    empty = make_rootfs(tmp_path, blob_bytes=0)
    with pytest.raises(BundleInputError) as refused:
        create_bundle(
            empty,
            out=tmp_path / "e.raucb",
            compatible=COMPATIBLE,
            version="1",
            signing=keys.signing,
        )
    assert "compresses to a single 4 KiB block" in refused.value.what
    assert refused.value.where == str(empty)


def test_a_file_that_is_not_ext4_makes_no_bundle(tmp_path: Path, keys: KeySet) -> None:
    with pytest.raises(BundleInputError) as refused:
        create_bundle(
            keys.keyring,
            out=tmp_path / "x.raucb",
            compatible=COMPATIBLE,
            version="1",
            signing=keys.signing,
        )
    assert refused.value.what == "not an ext2/3/4 file system image"


# --- keys ----------------------------------------------------------------------------------


def test_keys_init_refuses_to_overwrite_and_force_replaces(tmp_path: Path) -> None:
    first = init_keys(tmp_path)
    keyring = first.keyring.read_bytes()
    with pytest.raises(UpdateKeysError) as refused:
        init_keys(tmp_path)
    assert refused.value.what.startswith(f"{tmp_path} already holds update keys")
    assert "--force" in (refused.value.hint or "")
    assert first.keyring.read_bytes() == keyring
    init_keys(tmp_path, force=True)
    assert first.keyring.read_bytes() != keyring


def test_private_keys_are_0600_and_certificates_readable(keys: KeySet) -> None:
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in keys.directory.iterdir()}
    assert modes[CA_KEY_NAME] == 0o600
    assert modes[SIGNING_KEY_NAME] == 0o600
    assert modes[KEYRING_NAME] == 0o644
    assert modes[SIGNING_CERT_NAME] == 0o644
    assert sorted(modes) == sorted(
        [CA_KEY_NAME, SIGNING_KEY_NAME, KEYRING_NAME, SIGNING_CERT_NAME, "README.txt"]
    ), "scratch files were left behind"


def test_readme_says_which_file_is_the_keyring(keys: KeySet) -> None:
    text = keys.readme.read_text()
    assert re.search(rf"^{re.escape(KEYRING_NAME)}\s+THE KEYRING", text, re.M)
    assert "never go into an image" in text
    assert "own PKI" in text
    assert "codeSigning" in text


def test_certificates_carry_the_extensions_rauc_checks(keys: KeySet) -> None:
    def text_of(cert: Path) -> str:
        return subprocess.run(
            ["openssl", "x509", "-in", str(cert), "-noout", "-text"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    ca, signer = text_of(keys.keyring), text_of(keys.signing.cert)
    assert "CA:TRUE" in ca and "Certificate Sign" in ca
    assert "CA:FALSE" in signer and "Digital Signature" in signer and "Code Signing" in signer
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(keys.keyring), str(keys.signing.cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr


# --- the command line ----------------------------------------------------------------------


def moltbot(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_makes_keys_and_a_bundle_and_refuses_a_foreign_keyring(
    tmp_path: Path, rootfs: Path, other_keys: KeySet
) -> None:
    folder = tmp_path / "keys"
    made = moltbot("image", "keys", "init", folder)
    assert made.returncode == 0, made.stderr
    assert "the keyring is ca.cert.pem" in made.stdout
    again = moltbot("image", "keys", "init", folder)
    assert again.returncode == 2
    assert "already holds update keys" in again.stderr

    bundle = tmp_path / "out" / "u.raucb"
    built = moltbot(
        "image", "bundle", rootfs, "--keys", folder, "--compatible", COMPATIBLE,
        "--version", "2.0.1", "--out", bundle,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert f"signed verity bundle {bundle}" in built.stdout

    shown = moltbot("image", "bundle-info", bundle, "--keyring", folder / KEYRING_NAME)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"^\s+compatible\s+{COMPATIBLE}$", shown.stdout, re.M)
    assert re.search(r"^\s+version\s+2\.0\.1$", shown.stdout, re.M)

    refused = moltbot("image", "bundle-info", bundle, "--keyring", other_keys.keyring)
    assert refused.returncode == 2
    assert "error: the bundle is not signed by a certificate that" in refused.stderr
    assert "Traceback" not in refused.stderr
