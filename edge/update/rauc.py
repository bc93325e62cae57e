"""A small client of the ``rauc`` command line (RAUC 1.8, Debian bookworm) and the U-Boot env.

``rauc status``, ``install`` and ``mark-*`` talk to the RAUC service over D-Bus (Debian package
``rauc-service``; without it they fail with "Could not connect" / "ServiceUnknown"); ``rauc
info`` reads the bundle itself. The JSON shapes parsed here were captured from rauc 1.8 runs
against file-backed slots (see ``tests/integration/test_update_rauc_host.py``):

``rauc status --detailed --output-format=json``::

    {"compatible": "…", "variant": "", "booted": "A", "boot_primary": "rootfs.1",
     "slots": [{"rootfs.1": {"class": "rootfs", "device": "…", "type": "ext4",
                "bootname": "B", "state": "inactive", "parent": null, "mountpoint": null,
                "boot_status": "bad",
                "slot_status": {"bundle": {"compatible": "…", "version": "2.0.0", …},
                                "checksum": {"sha256": "…", "size": 8388608},
                                "installed": {"timestamp": "…", "count": 1},
                                "activated": {"timestamp": "…", "count": 1},
                                "status": "ok"}}}, …]}

``booted`` is a *bootname*, ``boot_primary`` a *slot name* and ``null`` when the bootloader
cannot be read (``rauc status`` still exits 0 then, with stale ``boot_status`` values — so a
``None`` primary is reported as a problem). ``boot_status`` is ``null`` for slots without a
bootname. A slot never written by RAUC has ``"slot_status": {"bundle": {"compatible": null}}``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import DependencyMissingError
from edge.update.errors import BootStateError, RaucError

logger = logging.getLogger(__name__)

PROGRESS_LINE = re.compile(r"^\s*(\d{1,3})% (.+)$")
FW_ENV_HINT = (
    "the U-Boot environment could not be written: check /etc/fw_env.config (device, offset "
    "and size of the environment) and that `fw_printenv BOOT_ORDER` works"
)
SERVICE_HINT = (
    "is the RAUC service running? `systemctl status rauc` (Debian package rauc-service); "
    "`journalctl -u rauc` shows why it failed"
)
INSTALL_HINT = "the booted slot is unchanged; `journalctl -u rauc` has the service's side"
DEFAULT_ATTEMPTS = 3


@dataclass(frozen=True)
class BundleInfo:
    """What ``rauc info`` says of a bundle (its signature checked against the keyring)."""

    compatible: str
    version: str
    description: str | None = None
    build: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BundleInfo:
        return cls(
            compatible=str(data["compatible"]),
            version=str(data["version"]),
            description=data.get("description"),
            build=data.get("build"),
        )


@dataclass(frozen=True)
class InstallProgress:
    """One ``rauc install`` progress line: `` 80% Checking slot rootfs.1``."""

    percent: int
    message: str


@dataclass(frozen=True)
class SlotState:
    """One slot of ``rauc status``, with the U-Boot attempts left to its bootname (``None``
    where the U-Boot environment was not read or has no ``BOOT_<bootname>_LEFT``)."""

    name: str
    slot_class: str
    device: str
    bootname: str | None
    state: str
    boot_status: str | None
    bundle_compatible: str | None = None
    bundle_version: str | None = None
    installed_at: str | None = None
    attempts_left: int | None = None

    @property
    def booted(self) -> bool:
        return self.state == "booted"


@dataclass(frozen=True)
class SlotsReport:
    """The system's slots: which one runs, which boots next, and how each one stands."""

    compatible: str
    variant: str
    booted: str | None
    boot_primary: str | None
    slots: tuple[SlotState, ...]
    boot_order: tuple[str, ...] | None = None
    problems: tuple[str, ...] = field(default=())

    def booted_slot(self) -> SlotState | None:
        return next((slot for slot in self.slots if slot.booted), None)

    def rootfs_slots(self) -> tuple[SlotState, ...]:
        return tuple(slot for slot in self.slots if slot.slot_class == "rootfs")

    def awaiting_confirmation(self, attempts_max: int = DEFAULT_ATTEMPTS) -> bool:
        """The booted slot is on trial: the bootloader counted attempts down, or calls it bad."""
        slot = self.booted_slot()
        if slot is None:
            return False
        if slot.boot_status == "bad":
            return True
        return slot.attempts_left is not None and slot.attempts_left < attempts_max

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_bundle_info(text: str) -> BundleInfo:
    try:
        return BundleInfo.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise RaucError("rauc info printed no bundle JSON", output=text) from exc


def parse_progress_line(line: str) -> InstallProgress | None:
    match = PROGRESS_LINE.match(line)
    if match is None or int(match.group(1)) > 100:
        return None
    return InstallProgress(int(match.group(1)), match.group(2).strip())


def parse_fw_env(text: str) -> dict[str, str]:
    """``fw_printenv A B`` output as a mapping; a variable printed empty (``A=``) is left out."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and value.strip():
            values[name.strip()] = value.strip()
    return values


def parse_status(
    text: str, fw_env: Mapping[str, str] | None = None, problems: Sequence[str] = ()
) -> SlotsReport:
    """``rauc status --detailed --output-format=json`` (+ the U-Boot variables) as a report."""
    try:
        data = json.loads(text)
        slots = tuple(
            _slot_state(name, fields, fw_env or {})
            for entry in data["slots"]
            for name, fields in entry.items()
        )
        compatible = str(data["compatible"])
        variant = str(data.get("variant") or "")
        booted, primary = data.get("booted"), data.get("boot_primary")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RaucError(
            f"rauc status printed JSON of another shape than rauc 1.8's ({exc!r})", output=text
        ) from exc
    found = list(problems)
    if primary is None:
        found.append("rauc cannot read the bootloader: boot status may be stale (see rauc logs)")
    order = (fw_env or {}).get("BOOT_ORDER")
    return SlotsReport(
        compatible=compatible,
        variant=variant,
        booted=booted,
        boot_primary=primary,
        slots=slots,
        boot_order=tuple(order.split()) if order else None,
        problems=tuple(found),
    )


def _slot_state(name: str, fields: Mapping[str, Any], fw_env: Mapping[str, str]) -> SlotState:
    detail = fields.get("slot_status") or {}
    bundle = detail.get("bundle") or {}
    bootname = fields.get("bootname")
    left = fw_env.get(f"BOOT_{bootname}_LEFT") if bootname else None
    return SlotState(
        name=name,
        slot_class=str(fields["class"]),
        device=str(fields["device"]),
        bootname=bootname,
        state=str(fields["state"]),
        boot_status=fields.get("boot_status"),
        bundle_compatible=bundle.get("compatible"),
        bundle_version=bundle.get("version"),
        installed_at=(detail.get("installed") or {}).get("timestamp"),
        attempts_left=_hexadecimal(left),
    )


def _hexadecimal(text: str | None) -> int | None:
    """A U-Boot counter: ``setexpr`` and RAUC write ``BOOT_<x>_LEFT`` in hexadecimal."""
    try:
        return None if text is None else int(text, 16)
    except ValueError:
        return None


class RaucClient:
    """Runs ``rauc`` (and ``fw_printenv``) with a timeout each; failures become ``RaucError``.

    ``rauc``/``fw_printenv`` are names looked up on ``PATH`` or paths (tests point them at
    their own); ``system_conf`` adds ``--conf``; ``environment`` is added to the process
    environment (a test's private D-Bus: ``DBUS_STARTER_BUS_TYPE=session``).
    """

    def __init__(
        self,
        *,
        rauc: str = "rauc",
        system_conf: Path | None = None,
        fw_printenv: str | None = "fw_printenv",
        fw_env_config: Path | None = None,
        environment: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
        install_timeout_s: float = 3600.0,
    ) -> None:
        self.rauc = rauc
        self.system_conf = system_conf
        self.fw_printenv = fw_printenv
        self.fw_env_config = fw_env_config
        self.environment = dict(environment or {})
        self.timeout_s = timeout_s
        self.install_timeout_s = install_timeout_s

    def info(self, bundle: Path) -> BundleInfo:
        result = self._rauc("info", "--output-format=json", str(bundle))
        if result.returncode != 0:
            raise RaucError(
                "rauc cannot read the bundle",
                output=result.stderr,
                where=str(bundle),
                hint="a bundle signed for another keyring or a damaged file: fetch it again",
            )
        return parse_bundle_info(result.stdout)

    def status(self) -> SlotsReport:
        result = self._rauc("status", "--detailed", "--output-format=json")
        if result.returncode != 0:
            raise RaucError("rauc status failed", output=result.stderr, hint=SERVICE_HINT)
        text = result.stdout
        bootnames = _bootnames(text)
        env, problems = self._boot_variables(bootnames)
        return parse_status(text, env, problems)

    def install(
        self, bundle: Path, progress: Callable[[InstallProgress], None] | None = None
    ) -> None:
        """``rauc install``; each progress line goes to ``progress`` as it is printed."""
        argv = [*self._argv(), "install", str(bundle)]
        lines = _stream(argv, self._env(), self.install_timeout_s, progress)
        if lines.returncode != 0:
            output = "\n".join(lines.output)
            last_error = next(
                (line for line in reversed(lines.output) if line.startswith("LastError:")), None
            )
            raise RaucError(
                "rauc could not install the bundle"
                + (f": {last_error.removeprefix('LastError: ')}" if last_error else ""),
                output=output,
                quote_output=last_error is None,
                where=str(bundle),
                hint=SERVICE_HINT if "D-Bus" in output else INSTALL_HINT,
            )

    def mark_good(self, slot: str = "booted") -> None:
        self._mark("good", slot)

    def mark_bad(self, slot: str = "booted") -> None:
        self._mark("bad", slot)

    def _mark(self, state: str, slot: str) -> None:
        result = self._rauc("status", f"mark-{state}", slot)
        if result.returncode != 0:
            raise BootStateError(
                f"rauc could not mark slot {slot!r} as {state}",
                output=f"{result.stdout}\n{result.stderr}",
                hint=SERVICE_HINT if "D-Bus" in result.stderr else FW_ENV_HINT,
            )
        logger.info("%s", result.stdout.strip() or f"marked {slot} {state}")

    def _boot_variables(self, bootnames: Sequence[str]) -> tuple[dict[str, str] | None, list[str]]:
        """``BOOT_<x>_LEFT`` and ``BOOT_ORDER`` from the U-Boot env; why not, if unreadable."""
        if self.fw_printenv is None or not bootnames:
            return None, []
        program = shutil.which(self.fw_printenv)
        if program is None:
            return None, [f"{self.fw_printenv} not found (Debian package libubootenv-tool)"]
        config = ["-c", str(self.fw_env_config)] if self.fw_env_config else []
        names = [*(f"BOOT_{name}_LEFT" for name in bootnames), "BOOT_ORDER"]
        result = _run([program, *config, *names], self._env(), self.timeout_s)
        if result.returncode != 0:
            said = " ".join(result.stderr.split())
            return None, [f"fw_printenv failed ({said}): check /etc/fw_env.config"]
        return parse_fw_env(result.stdout), []

    def _argv(self) -> list[str]:
        conf = [f"--conf={self.system_conf}"] if self.system_conf else []
        return [self.rauc, *conf]

    def _rauc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run([*self._argv(), *args], self._env(), self.timeout_s)

    def _env(self) -> dict[str, str] | None:
        return {**os.environ, **self.environment} if self.environment else None


def _bootnames(status_json: str) -> list[str]:
    """The bootnames in ``rauc status`` JSON (parse errors are left to ``parse_status``)."""
    try:
        entries = json.loads(status_json)["slots"]
        return [
            fields["bootname"]
            for entry in entries
            for fields in entry.values()
            if fields.get("bootname")
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def _run(
    argv: list[str], env: dict[str, str] | None, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - fixed program, arguments are paths and names
            argv, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
    except FileNotFoundError as exc:
        raise _missing(argv[0]) from exc
    except subprocess.TimeoutExpired as exc:
        raise RaucError(
            f"{' '.join(argv)} did not answer within {timeout_s:.0f} s", hint=SERVICE_HINT
        ) from exc


@dataclass(frozen=True)
class _Streamed:
    returncode: int
    output: list[str]


def _stream(
    argv: list[str],
    env: dict[str, str] | None,
    timeout_s: float,
    progress: Callable[[InstallProgress], None] | None,
) -> _Streamed:
    """Run ``argv``, hand each progress line on as it comes; kill it after ``timeout_s``."""
    output: list[str] = []
    try:
        process = subprocess.Popen(  # noqa: S603 - fixed program, the bundle's path
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
    except FileNotFoundError as exc:
        raise _missing(argv[0]) from exc
    timer = threading.Timer(timeout_s, process.kill)
    timer.start()
    try:
        with process:
            for line in process.stdout or ():
                output.append(line.rstrip("\n"))
                step = parse_progress_line(line)
                if step is not None and progress is not None:
                    progress(step)
        returncode = process.returncode
    finally:
        timer.cancel()
    if returncode < 0:
        raise RaucError(
            f"rauc install was stopped after {timeout_s:.0f} s",
            output="\n".join(output),
            hint=INSTALL_HINT,
        )
    return _Streamed(returncode, output)


def _missing(program: str) -> DependencyMissingError:
    return DependencyMissingError(
        f"{program} is not installed",
        hint="install the Debian packages rauc and rauc-service (and libubootenv-tool)",
    )
