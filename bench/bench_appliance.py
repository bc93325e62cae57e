"""Whole-appliance memory: ``moltbot run`` under load vs a bare ORT + paho process, same run.

Budget: the appliance under 512 MB resident (it must fit a 1-2 GB Pi 4), counted over its
process and the MQTT link process it starts (``uplink.link_process``). The bare process does
the same inference work with a plain ``InferenceSession`` and keeps one paho connection, so the
ratio shows what the service adds (API, outbox, uplink, metrics). A second run loads the Korean
Vosk model too (voice on, no microphone). Writes bench/results/appliance.json.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx2 as httpx  # noqa: E402

from tests.support import procfs  # noqa: E402
from tests.support.models import installed_registry, write_frames  # noqa: E402
from tests.support.mosquitto import MosquittoBroker, free_port  # noqa: E402
from tests.support.speech import KOREAN_MODEL  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BUDGET_MB = 512
REQUESTS = 500
TOKEN = "bench-token"

BARE = """
import sys, time, numpy as np, onnxruntime as ort, paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
sys.path.insert(0, sys.argv[3])
from models.defect.dataset import make_dataset, normalise
client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
client.connect("127.0.0.1", int(sys.argv[2])); client.loop_start()
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
frames = normalise(make_dataset(16, seed=1)[0])
for n in range(int(sys.argv[4])):
    session.run(None, {"image": frames[n % 16:n % 16 + 1]})
    client.publish("bench/bare", b"x" * 300, qos=1)
print("done", flush=True)
time.sleep(3600)
"""


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (the appliance's MQTT link process)."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and procfs.parent_pid(int(entry.name)) == pid
    ]


def memory_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of ``pid`` and the processes it started, summed (a
    sum of peaks: an upper bound of the peak together)."""
    totals = {"VmRSS": 0.0, "VmHWM": 0.0}
    tree = [pid, *children(pid)]
    for member in tree:
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in totals:
                totals[key] += int(value.split()[0]) / 1024
    return {"rss_mb": totals["VmRSS"], "peak_rss_mb": totals["VmHWM"], "processes": len(tree)}


def appliance_memory(workdir: Path, broker: MosquittoBroker, *, voice: bool) -> dict[str, float]:
    data_dir = workdir / ("data-voice" if voice else "data")
    installed_registry(data_dir / "models")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")} | {
        "MOLTBOT_DEVICE__DATA_DIR": str(data_dir),
        "MOLTBOT_DEVICE__ID": "bench",
        "MOLTBOT_UPLINK__HOST": broker.host,
        "MOLTBOT_UPLINK__PORT": str(broker.port),
        "MOLTBOT_API__HOST": "127.0.0.1",
        "MOLTBOT_API__PORT": str(port),
        "MOLTBOT_API__TOKEN": TOKEN,
        "MOLTBOT_TRIGGERS__DEBOUNCE_HITS": "1",
        "MOLTBOT_TRIGGERS__DEBOUNCE_WINDOW": "1",
        "MOLTBOT_TRIGGERS__COOLDOWN_S": "0",
        "MOLTBOT_VOICE__ENABLED": str(voice).lower(),
        "MOLTBOT_VOICE__MICROPHONE": "false",
        "MOLTBOT_VOICE__MODEL_DIR": str(KOREAN_MODEL),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        idle = memory_mb(process.pid)
        frames = [
            p.read_bytes() for paths in write_frames(workdir / "f", 4, 2).values() for p in paths
        ]
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"}
        started = time.perf_counter()
        with httpx.Client(base_url=base, timeout=10) as client:
            for n in range(REQUESTS):
                client.post(
                    "/v1/infer?trigger=true", content=frames[n % len(frames)], headers=headers
                ).raise_for_status()
        elapsed = time.perf_counter() - started
        loaded = memory_mb(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return {"idle_rss_mb": idle["rss_mb"], **loaded, "requests_per_s": REQUESTS / elapsed}


def bare_memory(broker: MosquittoBroker) -> dict[str, float]:
    model = ROOT / "models" / "defect" / "1" / "model.onnx"
    process = subprocess.Popen(
        [sys.executable, "-c", BARE, str(model), str(broker.port), str(ROOT), str(REQUESTS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        return memory_mb(process.pid)
    finally:
        process.kill()
        process.wait()


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        broker = MosquittoBroker(workdir=workdir / "broker")
        broker.start()
        try:
            ours = appliance_memory(workdir, broker, voice=False)
            with_voice = appliance_memory(workdir, broker, voice=True)
            bare = bare_memory(broker)
        finally:
            broker.stop()
    report = {
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "appliance": ours,
        "appliance_with_voice": with_voice,
        "bare_ort_paho": bare,
        "budget_mb": BUDGET_MB,
        "ratio_peak_rss": ours["peak_rss_mb"] / bare["peak_rss_mb"],
        "note": "resident memory of the appliance's process and its MQTT link process, summed",
    }
    (RESULTS / "appliance.json").write_text(json.dumps(report, indent=2))
    verdict = "OK" if ours["peak_rss_mb"] < BUDGET_MB else "OVER BUDGET"
    voice_verdict = "OK" if with_voice["peak_rss_mb"] < BUDGET_MB else "OVER BUDGET"
    print(f"{'process':<22} {'RSS MB':>8} {'peak MB':>8}")
    print(f"{'moltbot run (loaded)':<22} {ours['rss_mb']:>8.0f} {ours['peak_rss_mb']:>8.0f}")
    print(
        f"{'  + Korean Vosk model':<22} {with_voice['rss_mb']:>8.0f} "
        f"{with_voice['peak_rss_mb']:>8.0f}"
    )
    print(f"{'bare ORT + paho':<22} {bare['rss_mb']:>8.0f} {bare['peak_rss_mb']:>8.0f}")
    print(
        f"ratio {report['ratio_peak_rss']:.2f}x; idle {ours['idle_rss_mb']:.0f} MB; "
        f"{ours['requests_per_s']:.0f} /v1/infer?trigger=true per s; budget {BUDGET_MB} MB: "
        f"{verdict}; with the Korean Vosk model: {voice_verdict}"
    )


if __name__ == "__main__":
    main()
