"""Image build and boot: time per build stage (cold = empty rootfs cache, cached = rootfs from
the cache, as after an application-only change), image size raw / .xz, and boot to /healthz
under qemu-system-aarch64 -M virt (TCG) with the self-test's verdict. Needs root.

    python bench/bench_image.py [--cold] [--repro]

``--cold`` builds into a fresh cache first (adds the full mmdebstrap stage, minutes);
``--repro`` builds the rootfs twice more from scratch and compares the bytes. The
figures that survive a noisy machine are the ratios: cached / cold build time, .xz / raw size.
Writes bench/results/image.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from images.build import build_image  # noqa: E402
from images.qemu import HOST_FROM_GUEST, QemuBoot  # noqa: E402
from images.rootfs import default_cache_dir  # noqa: E402
from tests.support.mosquitto import MosquittoBroker, free_port  # noqa: E402
from tests.support.qemu_image import configured_copy  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RECIPE = ROOT / "images" / "recipes" / "rpi4b.yaml"


def build(cache: Path, out: Path) -> dict[str, object]:
    report = build_image(RECIPE, out, cache)
    return report.as_json()


def boot(image: Path, workdir: Path) -> dict[str, object]:
    broker = MosquittoBroker(workdir=workdir)
    broker.start()
    site: dict[str, object] = {"uplink": {"host": HOST_FROM_GUEST, "port": broker.port}}
    copy = configured_copy(image, workdir, site)  # sparse: 1 GiB of data, not the 5 GiB raw
    qemu = QemuBoot(copy, workdir, api_port=free_port())
    qemu.start()
    healthz_s = None
    try:
        deadline = time.monotonic() + 1200
        while time.monotonic() < deadline and healthz_s is None:
            try:
                url = f"http://127.0.0.1:{qemu.api_port}/healthz"
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        healthz_s = time.monotonic() - qemu.started_at
            except OSError:
                time.sleep(2)
        verdict = qemu.wait_for(r"MOLTBOT-SELFTEST: (PASS|FAIL)\b", 600)
        verdict_s = time.monotonic() - qemu.started_at
    finally:
        qemu.stop()
        broker.stop()
    return {
        "boot_to_healthz_s": round(healthz_s, 1) if healthz_s else None,
        "boot_to_selftest_verdict_s": round(verdict_s, 1),
        "selftest": verdict.group(1) if verdict else "none",
    }


def rootfs_twice(work: Path) -> dict[str, object]:
    """Two cold rootfs builds from the same inputs and SOURCE_DATE_EPOCH: same bytes?"""
    from edge.files import sha256_file  # noqa: PLC0415
    from images.build import layout_for, rootfs_spec, source_date_epoch, tree_digest  # noqa: PLC0415
    from images.recipe import load_recipe, recipe_hash  # noqa: PLC0415
    from images.rootfs import build_rootfs, extract_rootfs  # noqa: PLC0415

    epoch = source_date_epoch()
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    recipe, board = load_recipe(RECIPE, base_dir=ROOT)
    layout = layout_for(recipe, recipe_hash(recipe), board.partitions)
    spec = rootfs_spec(recipe, board.boot_medium, layout.partuuid("root"), epoch)
    found = []
    for run in (1, 2):
        tarball, _ = build_rootfs(spec, work / f"repro-cache-{run}")
        extract_rootfs(tarball, work / f"repro-tree-{run}")
        found.append((sha256_file(tarball), tree_digest(work / f"repro-tree-{run}")))
    return {
        "tarball_sha256": [f[0] for f in found],
        "tree_sha256": [f[1] for f in found],
        "identical_tarballs": found[0][0] == found[1][0],
        "identical_trees": found[0][1] == found[1][1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="build once into an empty cache")
    parser.add_argument(
        "--repro", action="store_true", help="also build the rootfs twice, cold, and compare"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if os.geteuid() != 0:
        sys.exit("bench_image needs root (it builds an image)")
    cache = default_cache_dir()  # the cache `make image` and the tests share
    results: dict[str, object] = {"host": platform.node(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if args.cold:
            results["cold"] = build(work / "cold-cache", work / "cold-out")
        results["cached"] = build(cache, work / "out")
        image = next((work / "out").glob("*.img"))
        results["boot"] = boot(image, work)
        if args.repro:
            results["rootfs_reproducibility"] = rootfs_twice(work)
    cached = results["cached"]
    assert isinstance(cached, dict)
    sizes = cached["sizes_bytes"]
    print(f"{'stage':<52} {'cold s':>8} {'cached s':>9}")
    cold_stages = results.get("cold", {}).get("stages_s", {})  # type: ignore[union-attr]
    for stage, seconds in cached["stages_s"].items():
        print(f"{stage:<52} {cold_stages.get(stage, '-'):>8} {seconds:>9}")
    raw_mib, xz_mib = sizes["image"] / 2**20, sizes["image_xz"] / 2**20
    print(f"image {raw_mib:.0f} MiB raw, {xz_mib:.0f} MiB .xz")
    print(f"boot: {results['boot']}")
    if "cold" in results:
        cold_total = results["cold"]["total_s"]  # type: ignore[index]
        results["cached_over_cold"] = round(cached["total_s"] / cold_total, 3)
    results["xz_over_raw"] = round(sizes["image_xz"] / sizes["image"], 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "image.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
