"""Over-the-air A/B updates with RAUC: fetch a bundle, install it, gate the new slot's boot.

``download`` fetches a bundle onto the data partition (resumable, sha256-checked), ``rauc``
drives the ``rauc`` command line and reads the U-Boot boot counters, ``health_gate`` decides
whether a freshly booted slot stays, ``install`` is one update from source to installed slot
(and records it in ``pending.json``), ``confirm`` gates the booted slot at every boot (and
writes ``last-boot.json``), ``outcome`` tells from both files whether the last update was
installed or rolled back, ``records`` reads and writes them, ``request`` checks an update asked
for over the API or MQTT.
"""

from edge.update.download import FetchedBundle, RetryPolicy, fetch_bundle
from edge.update.errors import (
    BootStateError,
    BundleVerificationError,
    DownloadError,
    InsufficientSpaceError,
    RaucError,
    UpdateError,
    UpdateSourceError,
)
from edge.update.health_gate import CheckResult, GateOutcome, HealthCheck, Verdict, run_health_gate
from edge.update.rauc import BundleInfo, RaucClient, SlotsReport, SlotState

__all__ = [
    "BootStateError",
    "BundleInfo",
    "BundleVerificationError",
    "CheckResult",
    "DownloadError",
    "FetchedBundle",
    "GateOutcome",
    "HealthCheck",
    "InsufficientSpaceError",
    "RaucClient",
    "RaucError",
    "RetryPolicy",
    "SlotState",
    "SlotsReport",
    "UpdateError",
    "UpdateSourceError",
    "Verdict",
    "fetch_bundle",
    "run_health_gate",
]
