"""Over-the-air A/B updates on the built Pi image under QEMU (virt, TCG): what an update costs
the line, against re-flashing the card.

    python bench/bench_update.py [--image-dir DIR] [--rounds N]

Per round, on a fresh configured copy of the image: slot A boots and is marked good; a newer
release (derived from the image's own root file system, as in the scenario test) is installed
over the API — **download + install** time, until the appliance asks for the reboot; the
**downtime** from the last answer of the old slot's API to the first ``/healthz`` of the new
slot, and the time until its health gate **marked it good**; then a release whose appliance
never becomes ready — the **rollback** time from the reset into it to ``/healthz`` on the good
slot again (the gate's deadline, ``GATE_DEADLINE_S``, is most of it). Sizes: the bundle against
the ``.img.xz`` a re-flash needs. Times are QEMU TCG on this host, several times slower than a
Pi 4; the ratios (bundle / .img.xz) carry over. ``--image-dir`` takes the output folder of
``moltbot image build`` (with its ``.img``, ``manifest.json`` and ``.img.xz``); without it the
image is built first (needs root, the rootfs cache makes that a minute or two). Writes
bench/results/update.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from images.build import build_image  # noqa: E402
from images.rootfs import default_cache_dir  # noqa: E402
from tests.support.ab_guest import (  # noqa: E402
    GATE_DEADLINE_S,
    INSTALL_S,
    Bundles,
    Guest,
    guest_site,
    make_bundles,
)
from tests.support.ab_update import serve_folder  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402
from tests.support.qemu_image import RPI4B_RECIPE, configured_copy  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TOOLS = {
    "qemu-system-aarch64": "qemu-system-arm (bookworm-backports)",
    "rauc": "rauc",
    "mksquashfs": "squashfs-tools",
    "debugfs": "e2fsprogs",
    "mosquitto": "mosquitto",
    "mcopy": "mtools",
}
logger = logging.getLogger("bench_update")


def require_tools() -> None:
    missing = {tool: package for tool, package in TOOLS.items() if shutil.which(tool) is None}
    if missing or not Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin").is_file():
        packages = " ".join(sorted({*missing.values(), "u-boot-qemu"}))
        sys.exit(f"bench_update needs {packages}: run `make host-deps` (or apt-get install them)")


def image_dir(given: Path | None, scratch: Path) -> Path:
    if given is not None:
        return given
    if os.geteuid() != 0:
        sys.exit("without --image-dir bench_update builds the image first, which needs root")
    return build_image(RPI4B_RECIPE, scratch / "out", default_cache_dir()).image.parent


def healthz_until_reset(guest: Guest, since: int, timeout_s: float) -> float:
    """Poll the old slot's ``/healthz`` until U-Boot runs again; when it last answered."""
    last_answer = time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if guest.qemu.wait_for(r"moltbot-boot: BOOT_ORDER=", 0.5, since) is not None:
            return last_answer
        try:
            guest.api.get("/healthz", timeout_s=2)
            last_answer = time.monotonic()
        except (OSError, ValueError):
            pass
    raise RuntimeError(f"no reboot within {timeout_s:.0f} s; {guest.console_tail()}")


def one_round(built: Path, bundles: Bundles, port: int, work: Path) -> dict[str, float]:
    broker = MosquittoBroker(workdir=work / "broker", persistence=True)
    broker.start()
    guest = Guest(configured_copy(built, work, guest_site(broker)), work, broker)
    figures: dict[str, float] = {}
    try:
        guest.power_on()
        guest.wait_booted("A", since=0)
        guest.wait_verdict("A", "good", since=0)

        mark = guest.qemu.mark()
        started = time.monotonic()
        guest.api.post_json("/v1/system/update", bundles.newer.request(port))
        last_answer = healthz_until_reset(guest, mark, INSTALL_S)
        figures["download_and_install_s"] = last_answer - started
        guest.wait_booted("B", since=mark)
        figures["downtime_to_healthz_s"] = time.monotonic() - last_answer
        guest.wait_verdict("B", "good", since=mark)
        figures["downtime_to_marked_good_s"] = time.monotonic() - last_answer

        mark = guest.qemu.mark()
        guest.api.post_json("/v1/system/update", bundles.broken.request(port))
        healthz_until_reset(guest, mark, INSTALL_S)
        into_broken = time.monotonic()
        guest.wait_verdict("A", "bad", since=mark)
        back = guest.qemu.mark()
        guest.wait_booted("B", since=back)
        figures["rollback_to_healthz_s"] = time.monotonic() - into_broken
    finally:
        guest.close()
        broker.stop()
    return {name: round(value, 1) for name, value in figures.items()}


def sizes(built: Path, bundles: Bundles) -> dict[str, int]:
    xz = built.with_name(f"{built.name}.xz")
    if xz.is_file():
        xz_bytes = xz.stat().st_size
    else:  # the .xz was removed after the build: its report still says how big it was
        report = json.loads((built.parent / "build-report.json").read_text())
        xz_bytes = report["sizes_bytes"].get("image_xz")
    if not xz_bytes:
        sys.exit(f"{xz} is missing: build the image with compression (the default)")
    return {
        "bundle": bundles.newer.path.stat().st_size,
        "image_xz": int(xz_bytes),
        "image_raw": built.stat().st_size,
    }


def summary(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        name: {
            "median": round(statistics.median(r[name] for r in rounds), 1),
            "min": min(r[name] for r in rounds),
            "max": max(r[name] for r in rounds),
        }
        for name in rounds[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image-dir", type=Path, help="output folder of `moltbot image build`")
    parser.add_argument("--rounds", type=int, default=1, help="fresh device per round")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    require_tools()
    with tempfile.TemporaryDirectory(prefix="bench-update-") as scratch_name:
        scratch = Path(scratch_name)
        built = next(image_dir(args.image_dir, scratch).glob("*.img"))
        bundles = make_bundles(built, scratch / "bundles")
        rounds = []
        with serve_folder(bundles.newer.path.parent) as port:
            for index in range(args.rounds):
                work = scratch / f"round-{index}"
                work.mkdir()
                rounds.append(one_round(built, bundles, port, work))
                logger.info("round %d: %s", index + 1, rounds[-1])
        measured = sizes(built, bundles)
    figures = summary(rounds)
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "machine": "qemu-system-aarch64 -M virt, TCG, 2 vCPUs, 1.5 GiB",
        "gate_deadline_s": GATE_DEADLINE_S,
        "sizes_bytes": measured,
        "bundle_over_image_xz": round(measured["bundle"] / measured["image_xz"], 3),
        "rounds": rounds,
        "summary": figures,
    }
    print(f"{'figure':<28} {'median':>8} {'min':>8} {'max':>8}")
    for name, row in figures.items():
        print(f"{name:<28} {row['median']:>8} {row['min']:>8} {row['max']:>8}")
    bundle_mib, xz_mib = measured["bundle"] / 2**20, measured["image_xz"] / 2**20
    ratio = results["bundle_over_image_xz"]
    print(f"bundle {bundle_mib:.0f} MiB vs .img.xz {xz_mib:.0f} MiB ({ratio}x)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "update.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
