"""Stand-ins for RAUC on a host without its D-Bus service: captured output, replayed.

Every JSON document, progress line and error message marked *captured* was taken from real
rauc 1.8 runs (Debian bookworm's ``rauc 1.8-2``) on a private ``dbus-daemon`` session bus with
``rauc service --override-boot-slot=…``, file-backed ext4 slots, ``bootloader=custom`` and
``bootloader=uboot`` over a file-backed U-Boot environment
(``tests/integration/test_update_rauc_host.py`` runs that setup for real). :class:`FakeTools`
writes stand-in ``rauc``/``fw_printenv``/``systemctl`` scripts that replay it by arguments and log
every call; :class:`BundleServer` serves a bundle over HTTP like an update server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge.update.errors import RaucError
from edge.update.rauc import BundleInfo, InstallProgress, SlotsReport, parse_status

# rauc status --detailed --output-format=json, bootloader=custom, right after installing 2.0.0
# into rootfs.1 while A runs (the custom backend keeps B "bad" until it is marked good).
STATUS_AFTER_INSTALL = (
    '{"compatible":"moltbot-test","variant":"","booted":"A","boot_primary":"rootfs.1","slots":'
    '[{"rootfs.1":{"class":"rootfs","device":"/tmp/rauclab/slot-b.img","type":"ext4",'
    '"bootname":"B","state":"inactive","parent":null,"mountpoint":null,"boot_status":"bad",'
    '"slot_status":{"bundle":{"compatible":"moltbot-test","version":"2.0.0","description":'
    '"test bundle","build":"20240101"},"checksum":{"sha256":'
    '"253855e3eabb56750d89f55a68505ecc82606e81e73ffee93eba362633b1c422","size":8388608},'
    '"installed":{"timestamp":"2026-12-05T04:29:31Z","count":1},"activated":{"timestamp":'
    '"2026-12-05T04:29:31Z","count":1},"status":"ok"}}},{"rootfs.0":{"class":"rootfs",'
    '"device":"/tmp/rauclab/slot-a.img","type":"ext4","bootname":"A","state":"booted",'
    '"parent":null,"mountpoint":null,"boot_status":"good","slot_status":{"bundle":'
    '{"compatible":null}}}}]}'
)
# bootloader=uboot, booted into B after the install, plus a slot without a bootname.
STATUS_BOOTED_B = (
    '{"compatible":"moltbot-test","variant":"","booted":"B","boot_primary":"rootfs.1","slots":'
    '[{"rootfs.1":{"class":"rootfs","device":"/tmp/rauclab/slot-b.img","type":"ext4",'
    '"bootname":"B","state":"booted","parent":null,"mountpoint":null,"boot_status":"good",'
    '"slot_status":{"bundle":{"compatible":"moltbot-test","version":"2.0.0","description":'
    '"test bundle","build":"20240101"},"checksum":{"sha256":'
    '"253855e3eabb56750d89f55a68505ecc82606e81e73ffee93eba362633b1c422","size":8388608},'
    '"installed":{"timestamp":"2026-12-05T04:30:13Z","count":1},"activated":{"timestamp":'
    '"2026-12-05T04:30:13Z","count":1},"status":"ok"}}},{"rootfs.0":{"class":"rootfs",'
    '"device":"/tmp/rauclab/slot-a.img","type":"ext4","bootname":"A","state":"inactive",'
    '"parent":null,"mountpoint":null,"boot_status":"good","slot_status":{"bundle":'
    '{"compatible":null}}}},{"appfs.0":{"class":"appfs","device":"/tmp/rauclab/app.img",'
    '"type":"ext4","bootname":null,"state":"inactive","parent":null,"mountpoint":null,'
    '"boot_status":null,"slot_status":{"bundle":{"compatible":null}}}}]}'
)
# bootloader=uboot with /etc/fw_env.config broken: rauc status still exits 0, primary null.
STATUS_BOOTLOADER_UNREADABLE = (
    '{"compatible":"moltbot-test","variant":"","booted":"B","boot_primary":null,"slots":'
    '[{"rootfs.1":{"class":"rootfs","device":"/tmp/rauclab/slot-b.img","type":"ext4",'
    '"bootname":"B","state":"booted","parent":null,"mountpoint":null,"boot_status":"bad"}},'
    '{"rootfs.0":{"class":"rootfs","device":"/tmp/rauclab/slot-a.img","type":"ext4",'
    '"bootname":"A","state":"inactive","parent":null,"mountpoint":null,"boot_status":"good"}}]}'
)
INFO = (
    '{"compatible":"moltbot-test","version":"2.0.0","description":"test bundle","build":'
    '"20240101","hooks":[],"images":[{"rootfs":{"variant":null,"filename":"rootfs.ext4",'
    '"checksum":"253855e3eabb56750d89f55a68505ecc82606e81e73ffee93eba362633b1c422","size":'
    '8388608,"hooks":[],"adaptive":[]}}]}'
)
INSTALL_OK = """installing
  0% Installing
  0% Determining slot states
 20% Determining slot states done.
 20% Checking bundle
 20% Verifying signature
 40% Verifying signature done.
 40% Checking bundle done.
 40% Checking manifest contents
 60% Checking manifest contents done.
 60% Determining target install group
 80% Determining target install group done.
 80% Updating slots
 80% Checking slot rootfs.1
 90% Checking slot rootfs.1 done.
 90% Copying image to rootfs.1
 99% Copying image to rootfs.1 done.
 99% Updating slots done.
100% Installing done.
Installing `/tmp/rauclab/v2.raucb` succeeded
"""
INSTALL_INCOMPATIBLE = """installing
  0% Installing
  0% Determining slot states
 20% Determining slot states done.
 20% Checking bundle
 20% Verifying signature
 40% Verifying signature done.
 40% Checking bundle done.
 40% Checking manifest contents
 60% Checking manifest contents done.
 60% Determining target install group
 80% Determining target install group done.
100% Installing failed.
LastError: Installation error: Compatible mismatch: Expected 'moltbot-test' but bundle \
manifest has 'other-board'
"""
MARK_GOOD_FW_ENV_BROKEN = (
    "rauc-Message: 04:30:20.636: Using central status file /tmp/rauclab/data-uboot/central.raucs\n"
    "\n(rauc:21242): rauc-WARNING **: 04:30:20.639: Failed getting primary slot: uboot backend: "
    "fw_printenv failed with exit code: 247\n\nrauc mark: Failed marking slot rootfs.1 as good: "
    "uboot backend: Failed to run fw_setenv: Child process exited with code 247\n"
)
NO_DBUS_SERVICE = (
    "Error retrieving slot status via D-Bus: error creating proxy: Could not connect: "
    "No such file or directory\n"
)
FW_ENV_ON_TRIAL = "BOOT_A_LEFT=3\nBOOT_B_LEFT=2\nBOOT_ORDER=B A\n"

# A stand-in tool: the first rule whose "args" start the call's arguments (``--conf=`` left out)
# answers; "wait_for" names a file to wait for first (at most 30 s), so a test can hold a call.
FAKE_TOOL = """#!{python}
import json, sys, time
from pathlib import Path
here = Path(__file__).parent
args = [a for a in sys.argv[1:] if not a.startswith("--conf=")]
with (here / "calls.jsonl").open("a") as log:
    log.write(json.dumps([Path(sys.argv[0]).name, *sys.argv[1:]]) + "\\n")
for rule in json.loads((here / "{name}.json").read_text()):
    if args[: len(rule["args"])] == rule["args"]:
        deadline = time.monotonic() + 30
        while rule.get("wait_for") and not Path(rule["wait_for"]).exists():
            if time.monotonic() > deadline:
                sys.exit(98)
            time.sleep(0.02)
        sys.stdout.write(rule.get("stdout", ""))
        sys.stderr.write(rule.get("stderr", ""))
        sys.exit(rule.get("rc", 0))
sys.stderr.write("fake {name}: no rule for %r\\n" % (args,))
sys.exit(99)
"""


class FakeTools:
    """Stand-ins for ``rauc`` and ``fw_printenv`` that replay captured output, by arguments."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def tool(self, name: str, *rules: dict[str, object]) -> str:
        script = self.folder / name
        script.write_text(FAKE_TOOL.format(python=sys.executable, name=name))
        script.chmod(0o755)
        (self.folder / f"{name}.json").write_text(json.dumps(list(rules)))
        return str(script)

    def calls(self) -> list[list[str]]:
        log = self.folder / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def commands(self) -> list[list[str]]:
        """The calls without ``rauc``'s ``--conf=…`` (which follows the config)."""
        return [[arg for arg in call if not arg.startswith("--conf=")] for call in self.calls()]


FW_ENV_MARKED_GOOD = "BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\n"
FW_ENV_ROLLED_BACK = "BOOT_A_LEFT=2\nBOOT_B_LEFT=0\nBOOT_ORDER=A B\n"


def status_booted_a_after_rollback() -> str:
    """*Derived*, not captured: :data:`STATUS_BOOTED_B` after U-Boot fell back to A — booted
    A (primary again), B inactive and bad. Only the fields a fallback changes are changed."""
    data: dict[str, Any] = json.loads(STATUS_BOOTED_B)
    data["booted"], data["boot_primary"] = "A", "rootfs.0"
    for entry in data["slots"]:
        for name, fields in entry.items():
            if name == "rootfs.0":
                fields["state"], fields["boot_status"] = "booted", "good"
            elif name == "rootfs.1":
                fields["state"], fields["boot_status"] = "inactive", "bad"
    return json.dumps(data)


class BundleServer:
    """Serves the files of ``folder`` over HTTP on a free loopback port (an update server)."""

    def __init__(self, folder: Path) -> None:
        handler = partial(QuietHandler, directory=str(folder))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests assert on what was fetched, not on the access log."""


@contextmanager
def serving(folder: Path) -> Iterator[BundleServer]:
    server = BundleServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run_moltbot(
    *args: str, path_dir: Path, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """``moltbot ARGS`` in a subprocess with the stand-ins of ``path_dir`` first on ``PATH`` and
    no ``MOLTBOT_*`` variables of the caller's."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")}
    environ["PATH"] = f"{path_dir}{os.pathsep}{environ.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=timeout_s,
        check=False,
    )


@dataclass
class FakeRauc:
    """An in-process ``SlotInstaller``: what a bundle says, what status says (captured rauc
    output: before the install, after it), the installs made."""

    compatible: str = "moltbot-test"
    fail_install: bool = False
    installed: list[Path] = field(default_factory=list)
    status_before: str = STATUS_AFTER_INSTALL
    status_after: str = STATUS_AFTER_INSTALL
    hold: threading.Event | None = None  # install waits for it: a job that is still running

    def info(self, bundle: Path) -> BundleInfo:
        return BundleInfo(compatible=self.compatible, version="2.0.0")

    def status(self) -> SlotsReport:
        return parse_status(self.status_after if self.installed else self.status_before)

    def install(
        self, bundle: Path, progress: Callable[[InstallProgress], None] | None = None
    ) -> None:
        if self.hold is not None:
            assert self.hold.wait(30), "the test never let the install finish"
        if self.fail_install:
            raise RaucError("rauc could not install the bundle", output="LastError: no space")
        assert bundle.exists()
        self.installed.append(bundle)
        if progress is not None:
            progress(InstallProgress(100, "Installing done."))
