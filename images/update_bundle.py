"""Signed RAUC update bundles of a root file system (``moltbot image bundle``, ``bundle-info``).

``create_bundle`` puts an ext4 image of the root file system and a manifest rendered from
``images/rauc/manifest.raucm`` into a ``verity`` bundle signed with a key folder's signing key
(``images.update_keys``); RAUC verifies the chain against the keyring while it signs, and the
new bundle is inspected like any other before it takes its place at ``out``.

``inspect_bundle`` is what a device would check, done on the host before a bundle goes
anywhere: the signature chain against a keyring (``rauc info``, with RAUC's ``codesign``
purpose), the ``compatible`` string, and the payload. For a verity bundle ``rauc info`` checks
only the signed manifest (a device checks the payload block by block as it reads it through
dm-verity), so the payload is checked here against the hash tree whose root the manifest holds
(``images.bundle_verity``, which also knows where payload and signature lie in a bundle file).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from images.bundle_errors import (
    BundleCompatibleError,
    BundleDamagedError,
    BundleInputError,
    BundleRefusedError,
    BundleSignatureError,
)
from images.bundle_verity import BundleLayout, read_layout, verify_verity_payload
from images.run import ToolError, run, stage
from images.templates import render
from images.update_keys import KEYRING_NAME, SIGNING_CERT_NAME, SigningFiles, UpdateKeysError

MANIFEST_TEMPLATE = Path(__file__).parent / "rauc" / "manifest.raucm"
ROOTFS_FILENAME = "rootfs.ext4"
BUNDLE_FORMAT = "verity"
# How the builder runs rauc: it checks the chain with the purpose a device should configure
# ([keyring] check-purpose=codesign). Without it RAUC 1.8 lets OpenSSL check "smimesign", which
# refuses a code-signing certificate ("unsuitable certificate purpose"). Nothing is installed,
# so the noop boot loader and a compatible of its own are enough.
RAUC_HOST_CONF = """\
[system]
compatible=moltbot-builder-host
bootloader=noop

[keyring]
check-purpose=codesign
"""
PACKAGE_OF = {"rauc": "rauc", "mksquashfs": "squashfs-tools", "openssl": "openssl"}

EXT4_MAGIC_OFFSET = 1080
EXT4_MAGIC = b"\x53\xef"

NAME_PART = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
COMPATIBLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~_-]{0,63}$")
# One line of a GKeyFile value: no control characters, no backslash (an escape there).
TEXT_VALUE = re.compile(r"^[^\x00-\x1f\x7f\\\s](?:[^\x00-\x1f\x7f\\]{0,198}[^\x00-\x1f\x7f\\\s])?$")


@dataclass(frozen=True)
class BundleImage:
    slot_class: str
    filename: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle holds, as its signature vouches for it."""

    path: Path
    compatible: str
    version: str
    format: str
    description: str | None
    build: str | None
    images: tuple[BundleImage, ...]
    size_bytes: int


# --- pure pieces -----------------------------------------------------------------------------


def compatible_for(board: str, recipe_name: str) -> str:
    """The RAUC ``compatible`` string of images built from recipe ``recipe_name`` for ``board``.

    ``moltbot-<board>-<recipe name>``, e.g. ``moltbot-rpi4b-rpi4b-appliance``. The image's
    ``/etc/rauc/system.conf`` and every bundle for it carry this string, and a device installs
    only bundles with its own. The rule is deliberately plain: renaming a recipe or a board
    makes a new line of devices that no longer take the old line's bundles.
    """
    for field, value in (("board", board), ("recipe name", recipe_name)):
        if not NAME_PART.fullmatch(value):
            raise BundleInputError(
                f"{field} {value!r} cannot be part of a compatible string",
                where=field,
                hint="use lower-case letters, digits, '-' and '_' (as recipes and boards do)",
            )
    return f"moltbot-{board}-{recipe_name}"


def render_manifest(
    *, compatible: str, version: str, description: str, build: str, template: Path | None = None
) -> str:
    """The bundle manifest for these values, from ``images/rauc/manifest.raucm``."""
    checks = (
        ("compatible", compatible, COMPATIBLE, "letters, digits, '.', '_', '+', '-'"),
        ("version", version, VERSION, "letters, digits, '.', '_', '+', '~', '-' (e.g. 1.4.0)"),
        ("description", description, TEXT_VALUE, "one line, no backslash, up to 200 characters"),
        ("build", build, TEXT_VALUE, "one line, no backslash, up to 200 characters"),
    )
    for field, value, pattern, allowed in checks:
        if not pattern.fullmatch(value):
            raise BundleInputError(
                f"{field} {value!r} cannot go into a bundle manifest",
                where=f"--{field}",
                hint=f"allowed: {allowed}",
            )
    values = {
        "COMPATIBLE": compatible,
        "VERSION": version,
        "DESCRIPTION": description,
        "BUILD": build,
        "ROOTFS_FILENAME": ROOTFS_FILENAME,
    }
    return render(template or MANIFEST_TEMPLATE, values)


@dataclass(frozen=True)
class RaucInfo:
    """The signed fields ``rauc info --output-format=json`` (RAUC 1.8) prints."""

    compatible: str
    version: str
    description: str | None
    build: str | None
    images: tuple[BundleImage, ...]


def parse_rauc_info(text: str, *, where: str) -> RaucInfo:
    """``rauc info --output-format=json``'s output, typed; ``ToolError`` when it is not that."""
    try:
        info: Any = json.loads(text)
        images = tuple(
            BundleImage(
                slot_class=slot_class,
                filename=str(fields["filename"]),
                sha256=str(fields["checksum"]),
                size_bytes=int(fields["size"]),
            )
            for entry in info["images"]
            for slot_class, fields in entry.items()
        )
        return RaucInfo(
            compatible=str(info["compatible"]),
            version=str(info["version"]),
            description=_optional_text(info.get("description")),
            build=_optional_text(info.get("build")),
            images=images,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ToolError(
            f"rauc info printed what this builder cannot read ({exc!r})",
            where=where,
            hint="this builder reads the JSON of RAUC 1.8 (Debian 12's rauc package)",
        ) from exc


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


# --- making a bundle -------------------------------------------------------------------------


def create_bundle(
    rootfs_image: Path,
    *,
    out: Path,
    compatible: str,
    version: str,
    signing: SigningFiles,
    build_id: str | None = None,
    description: str | None = None,
) -> BundleInfo:
    """Sign ``rootfs_image`` (ext4) into a verity bundle at ``out`` (replaced if present).

    The bundle is made in a scratch folder beside ``out`` and moves there only after it
    passed ``inspect_bundle`` against ``signing.keyring``.
    """
    _require_tools("rauc", "mksquashfs", "openssl")
    _check_ext4(rootfs_image)
    manifest = render_manifest(
        compatible=compatible,
        version=version,
        description=description or f"Moltbot Edge root file system {version}",
        build=build_id or _default_build_id(),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as scratch_name:
        scratch = Path(scratch_name)
        content = scratch / "content"
        content.mkdir()
        (content / "manifest.raucm").write_text(manifest, encoding="utf-8")
        _link_or_copy(rootfs_image, content / ROOTFS_FILENAME)
        partial = scratch / out.name
        with stage(f"sign the update bundle {out.name}"):
            _rauc_bundle(content, partial, signing, _host_conf(scratch), rootfs_image)
        info = inspect_bundle(partial, keyring=signing.keyring, compatible=compatible)
        os.replace(partial, out)
    return replace(info, path=out)


# zstd: on a 2 GiB root image (1 GB of files, 2 cores) 5 s instead of gzip's 72 s, 7 % larger;
# Debian's arm64 kernel reads zstd squashfs (CONFIG_SQUASHFS_ZSTD=y).
MKSQUASHFS_ARGS = "-comp zstd -Xcompression-level 3"


def _rauc_bundle(
    content: Path, bundle: Path, signing: SigningFiles, conf: Path, rootfs_image: Path
) -> None:
    try:
        run(
            ["rauc", "--conf", conf, "bundle", "--cert", signing.cert, "--key", signing.key,
             "--signing-keyring", signing.keyring, f"--mksquashfs-args={MKSQUASHFS_ARGS}",
             content, bundle],
            step="rauc bundle",
        )  # fmt: skip
    except ToolError as exc:
        raise _bundle_failure(exc, signing, rootfs_image) from exc


def _bundle_failure(exc: ToolError, signing: SigningFiles, rootfs_image: Path) -> Exception:
    reason = _rauc_reason(exc)
    folder = str(signing.cert.parent)
    if "squashfs size" in reason:
        return BundleInputError(
            f"the root file system image compresses to a single 4 KiB block ({reason})",
            where=str(rootfs_image),
            hint="RAUC 1.8 refuses such a bundle; is the image empty?",
        )
    if "unsuitable certificate purpose" in reason:
        return UpdateKeysError(
            f"{SIGNING_CERT_NAME} is not a code-signing certificate ({reason})",
            where=str(signing.cert),
            hint="issue it with extendedKeyUsage codeSigning and keyUsage digitalSignature",
        )
    if "local issuer" in reason or "self-signed certificate" in reason:
        return UpdateKeysError(
            f"{signing.cert.name} is not issued by the keyring {signing.keyring.name} ({reason})",
            where=folder,
            hint=f"put the CA that issued the signing certificate into {KEYRING_NAME}",
        )
    if "key values mismatch" in reason or "does not match certificate" in reason:
        return UpdateKeysError(
            f"{signing.key.name} is not the key of {signing.cert.name}",
            where=folder,
            hint="put the signing certificate's own private key into the folder",
        )
    if "expired" in reason or "not yet valid" in reason:
        return UpdateKeysError(
            f"a certificate in {folder} is outside its validity period ({reason})",
            where=folder,
            hint="check this host's clock, or issue a new signing certificate",
        )
    return exc


def _check_ext4(image: Path) -> None:
    try:
        with image.open("rb") as stream:
            stream.seek(EXT4_MAGIC_OFFSET)
            magic = stream.read(len(EXT4_MAGIC))
    except OSError as exc:
        raise BundleInputError(
            f"cannot read the root file system image ({exc.strerror})",
            where=str(image),
            hint="give the path of an ext4 image file",
        ) from exc
    if magic != EXT4_MAGIC:
        raise BundleInputError(
            "not an ext2/3/4 file system image",
            where=str(image),
            hint="give the ext4 image of the root file system (mkfs.ext4 -d TREE FILE SIZE)",
        )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _default_build_id() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else datetime.now(UTC)
    return moment.strftime("%Y%m%dT%H%M%SZ")


# --- checking a bundle -----------------------------------------------------------------------


def inspect_bundle(bundle: Path, *, keyring: Path, compatible: str | None = None) -> BundleInfo:
    """What ``bundle`` holds, after the checks a device makes; refuses a bundle that fails one.

    Raises ``BundleDamagedError`` (truncated, payload altered), ``BundleSignatureError`` (not
    signed by a certificate ``keyring`` issued for code signing, signature altered) or
    ``BundleCompatibleError`` (``compatible`` given and different). Writes nothing but scratch
    files in a temporary folder.
    """
    _require_tools("rauc", "openssl")
    for path, what in ((bundle, "bundle"), (keyring, "keyring")):
        if not path.is_file():
            raise BundleInputError(
                f"the {what} {path} is not a file", where=str(path), hint="check the path"
            )
    layout = read_layout(bundle)
    with tempfile.TemporaryDirectory(prefix="moltbot-bundle-") as scratch_name:
        scratch = Path(scratch_name)
        text = _rauc_info(bundle, keyring, _host_conf(scratch))
        signed = parse_rauc_info(text, where=str(bundle))
        if compatible is not None and signed.compatible != compatible:
            raise BundleCompatibleError(
                f"the bundle is for {signed.compatible!r}, not {compatible!r}",
                where=str(bundle),
                hint="use the bundle built for these devices (their system.conf names their "
                "compatible string); a device would refuse this one",
            )
        manifest = _signed_manifest(bundle, layout, keyring, scratch)
    in_manifest = (
        manifest.get("update", "compatible", fallback=None),
        manifest.get("update", "version", fallback=None),
    )
    if in_manifest != (signed.compatible, signed.version):
        raise BundleDamagedError(
            "the bundle changed while it was being checked",
            where=str(bundle),
            hint="check it again once nothing writes to it",
        )
    bundle_format = manifest.get("bundle", "format", fallback="plain")
    if bundle_format == "verity":
        verify_verity_payload(bundle, layout, manifest)
    elif bundle_format != "plain":  # plain: rauc info verified the signature over the payload
        raise BundleRefusedError(
            f"bundle format {bundle_format!r} is not one this builder checks",
            where=str(bundle),
            hint=f"make bundles with `moltbot image bundle` ({BUNDLE_FORMAT} format)",
        )
    return BundleInfo(
        path=bundle,
        compatible=signed.compatible,
        version=signed.version,
        format=bundle_format,
        description=signed.description,
        build=signed.build,
        images=signed.images,
        size_bytes=layout.size_bytes,
    )


def _rauc_info(bundle: Path, keyring: Path, conf: Path) -> str:
    try:
        return run(
            ["rauc", "--conf", conf, "info", "--keyring", keyring, "--output-format=json", bundle],
            step="rauc info",
        )
    except ToolError as exc:
        raise _info_refusal(_rauc_reason(exc), bundle, keyring) from exc


def _info_refusal(reason: str, bundle: Path, keyring: Path) -> BundleRefusedError:
    where = str(bundle)
    if "Invalid bundle format" in reason or "no valid CMS" in reason:
        return BundleDamagedError(
            f"the bundle is truncated or damaged ({reason})",
            where=where,
            hint="copy or download it again; do not install it",
        )
    if "local issuer" in reason or "self-signed certificate" in reason:
        return BundleSignatureError(
            f"the bundle is not signed by a certificate that {keyring} issued ({reason})",
            where=where,
            hint=f"check it with the keyring of the keys that signed it ({KEYRING_NAME} of "
            "their folder); devices with this keyring would refuse it",
        )
    if "signature verification failed" in reason:
        return BundleSignatureError(
            f"the bundle's signature does not verify ({reason})",
            where=where,
            hint="the bundle was altered or damaged; copy it again or make it again",
        )
    return BundleRefusedError(
        f"rauc refuses the bundle ({reason})",
        where=where,
        hint=f"`rauc info --keyring {keyring} {bundle}` shows rauc's whole output",
    )


def _signed_manifest(
    bundle: Path, layout: BundleLayout, keyring: Path, scratch: Path
) -> configparser.ConfigParser:
    """The manifest inside the bundle's signature, verified against ``keyring`` once more: the
    hash tree root it holds is what the payload is checked against."""
    signature = scratch / "signature.cms"
    with bundle.open("rb") as stream:
        stream.seek(layout.payload_bytes)
        signature.write_bytes(stream.read(layout.signature_bytes))
    try:
        text = run(
            ["openssl", "cms", "-verify", "-inform", "DER", "-binary", "-in", signature,
             "-CAfile", keyring, "-purpose", "any"],
            step="read the signed manifest",
        )  # fmt: skip
    except ToolError as exc:
        raise BundleDamagedError(
            "the bundle's signature no longer verifies (it changed while it was checked?)",
            where=str(bundle),
            hint="check it again once nothing writes to it",
        ) from exc
    manifest = configparser.ConfigParser(interpolation=None)
    try:
        manifest.read_string(text)
    except configparser.Error as exc:
        raise BundleDamagedError(
            f"the signed manifest cannot be read ({exc})",
            where=str(bundle),
            hint="make the bundle again with `moltbot image bundle`",
        ) from exc
    return manifest


# --- running rauc ----------------------------------------------------------------------------


def _host_conf(scratch: Path) -> Path:
    conf = scratch / "rauc-host.conf"
    conf.write_text(RAUC_HOST_CONF, encoding="ascii")
    return conf


def _rauc_reason(exc: ToolError) -> str:
    """rauc's own message in a failed run: its last line that is not a log line."""
    lines = [
        line.strip()
        for line in exc.what.splitlines()
        if line.strip() and "rauc-Message:" not in line and "rauc-WARNING" not in line
    ]
    reason = lines[-1] if lines else exc.what
    return reason.split("): ", 1)[-1] if reason.startswith("rauc ") else reason


def _require_tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            raise ToolError(
                f"{tool} is not installed",
                where=tool,
                hint=f"apt-get install {PACKAGE_OF.get(tool, tool)}",
            )
