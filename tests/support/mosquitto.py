"""A real Mosquitto broker on a free loopback port, stoppable and restartable.

Started from the Debian package's binary with a generated config, so tests (and benchmarks)
talk to the same broker software users run. ``stop()``/``kill()`` then ``start()`` simulate an
outage; the port stays the same across restarts.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "mosquitto")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mosquitto_binary() -> str:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        "mosquitto is not installed; run `make test` (it installs the Debian package) "
        "or apt-get install mosquitto"
    )


@dataclass
class MosquittoBroker:
    workdir: Path
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"
    extra_config: str = ""
    listener_options: str = ""
    persistence: bool = False
    max_packet_bytes: int = 1024 * 1024
    _process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        return (
            "user root\n"  # as root, do not drop to the mosquitto user: it cannot read tmp dirs
            f"listener {self.port} {self.host}\n"
            f"{self.listener_options}"
            "allow_anonymous true\n"
            f"persistence {'true' if self.persistence else 'false'}\n"
            f"persistence_location {self.workdir}/\n"
            f"max_packet_size {self.max_packet_bytes}\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 0\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"{self.extra_config}"
        )

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "mosquitto.conf"
        config_path.write_text(self.config_text())
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            self._process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(config_path)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited at start: {self.log_path.read_text()}")
            if self._accepts_connections():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout_s}s")

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Graceful stop (SIGTERM), as when the broker's service is restarted."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as when the broker's host loses power."""
        self._end(signal.SIGKILL)

    def pause(self) -> None:
        """The broker stops answering (SIGSTOP) with its connections open, as a broker
        that hangs: what clients send waits in their sockets, nothing is acknowledged."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def _end(self, how: signal.Signals) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(how)
            self._process.send_signal(signal.SIGCONT)  # a paused broker handles it too
            self._process.wait(timeout=10)
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()
