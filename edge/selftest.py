"""``moltbot system selftest``: a release gate run on the device itself.

Waits for the running appliance to answer ``/healthz`` and ``/readyz``, then loads the active
model from the registry on the data partition on this board's backend and runs its shipped
reference inputs: outputs beyond the manifest's tolerance fail. Each check prints one line
(``MOLTBOT-SELFTEST: …``); the unit copies them to the console, where a boot test reads them.
Enabled in images, started only when the kernel command line has ``moltbot.selftest=1``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edge.config.model import MoltbotConfig
from edge.errors import MoltbotError

PREFIX = "MOLTBOT-SELFTEST:"
WATCHDOG_SYSFS = Path("/sys/class/watchdog")


@dataclass
class SelftestReport:
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(ok for _, ok, _ in self.results)

    def lines(self) -> list[str]:
        out = [
            f"{PREFIX} {'ok' if ok else 'FAIL'} {name}: {detail}"
            for name, ok, detail in self.results
        ]
        out.append(f"{PREFIX} {'PASS' if self.passed else 'FAIL'}")
        return out


def wait_http(url: str, timeout_s: float, *, want: int = 200) -> tuple[bool, str]:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback http
                if response.status == want:
                    return True, response.read(300).decode(errors="replace")
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read(300).decode(errors='replace')}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(1.0)
    return False, last


def service_log_tail(lines: int = 25) -> list[str]:
    """The appliance's last journal lines, to say why it does not answer (on the console)."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return []
    out = subprocess.run(  # noqa: S603 - fixed argv
        [journalctl, "-u", "moltbot.service", "-n", str(lines), "--no-pager", "-o", "cat"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.splitlines()


def boot_state(timeout_s: float) -> tuple[bool, str]:
    """Wait for the boot to finish; a unit that failed fails the gate (by name)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False, "systemctl not found: not a systemd system"
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while time.monotonic() < deadline:
        state = subprocess.run(  # noqa: S603 - fixed argv
            [systemctl, "is-system-running"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(2.0)
    if state == "running":
        return True, "running, no failed units"
    failed = subprocess.run(  # noqa: S603 - fixed argv
        [systemctl, "--failed", "--plain", "--no-legend", "--no-pager"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    units = [word for word in failed if "." in word and not word.startswith("●")]
    return False, f"{state}; failed units: {', '.join(units) or 'none listed'}"


def storage(config: MoltbotConfig) -> tuple[bool, str]:
    """The data dir's size and free space (first boot grows it to the card)."""
    try:
        usage = shutil.disk_usage(config.device.data_dir)
    except OSError as exc:
        return False, f"{config.device.data_dir}: {exc}"
    return True, (
        f"{config.device.data_dir} {usage.total / 2**20:.0f} MiB, {usage.free / 2**20:.0f} MiB free"
    )


def hardware_watchdog(sysfs: Path = WATCHDOG_SYSFS) -> tuple[bool, str]:
    """Whether a hardware watchdog is armed (systemd's ``RuntimeWatchdogSec`` in images): a
    hang then resets the board. A board without one passes, and says so; one that has a
    watchdog nobody armed fails."""
    devices = sorted(sysfs.glob("watchdog[0-9]*")) if sysfs.is_dir() else []
    if not devices:
        return True, "none on this board: a hang is not reset"
    found = []
    for device in devices:
        identity = _sysfs_text(device / "identity") or device.name
        state = _sysfs_text(device / "state")
        if state == "active":
            timeout = _sysfs_text(device / "timeout")
            return True, f"{identity} active, timeout {timeout or '?'} s"
        found.append(f"{identity} {state or 'state unknown'}")
    return False, (
        f"{', '.join(found)}: not armed (systemd's RuntimeWatchdogSec in "
        "/etc/systemd/system.conf.d/moltbot-watchdog.conf arms it at boot)"
    )


def _sysfs_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def reference_inference(config: MoltbotConfig) -> str:
    """The active model, loaded here on this board's backend order, reference-checked."""
    from edge.wiring import inference_service  # noqa: PLC0415 - onnxruntime only when needed

    paths = config.paths()
    service = inference_service(config)
    served = service.activate(config.inference.active_model, persist=False)
    if served.reference_deviation is None:
        raise MoltbotError(
            f"{served.loaded.manifest.ref} ships no reference outputs",
            where=str(paths.model_dir),
            hint="record reference outputs when exporting the model (models/*/train.py)",
        )
    return (
        f"{served.loaded.manifest.ref} on {served.loaded.backend} ({served.loaded.precision}), "
        f"max deviation {served.reference_deviation:.2e}"
    )


def run_selftest(
    config: MoltbotConfig,
    *,
    timeout_s: float,
    emit: Callable[[str], None],
    check_boot: bool = True,
) -> SelftestReport:
    report = SelftestReport()

    def record(name: str, ok: bool, detail: str) -> None:
        report.results.append((name, ok, detail))
        emit(report.lines()[-2])

    base = f"http://127.0.0.1:{config.api.port}"
    started = time.monotonic()
    if config.api.enabled:
        ok, detail = wait_http(f"{base}/healthz", timeout_s)
        record("healthz", ok, f"{time.monotonic() - started:.1f} s: {detail[:120]}")
        if not ok:
            for line in service_log_tail():
                emit(f"{PREFIX} log moltbot.service: {line}")
        ok, detail = wait_http(f"{base}/readyz", max(5.0, timeout_s - (time.monotonic() - started)))
        record("readyz", ok, _summary(detail))
    if config.inference.enabled:
        try:
            record("reference inference", True, reference_inference(config))
        except MoltbotError as exc:
            record("reference inference", False, str(exc))
    record("storage", *storage(config))
    record("watchdog", *hardware_watchdog())
    if check_boot:
        ok, detail = boot_state(max(10.0, timeout_s - (time.monotonic() - started)))
        record("system", ok, detail)
    emit(report.lines()[-1])
    return report


def _summary(body: str) -> str:
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return body[:160]
    return json.dumps(parsed, sort_keys=True)[:160]
