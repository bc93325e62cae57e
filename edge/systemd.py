"""systemd's notify protocol (``Type=notify``): READY=1, WATCHDOG=1, STOPPING=1, STATUS=…

A datagram to ``$NOTIFY_SOCKET``; nothing happens when the variable is unset (not under
systemd), so the same code runs in a terminal, in tests and in a unit.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


def notify(*assignments: str) -> bool:
    """Send ``KEY=value`` lines to systemd; False when not running under a notify unit."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    target = "\0" + address[1:] if address.startswith("@") else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(target)
            sock.sendall("\n".join(assignments).encode())
    except OSError as exc:
        logger.warning("cannot notify systemd at %s: %s", address, exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the unit's ``WatchdogSec`` (systemd's advice), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
