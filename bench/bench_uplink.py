"""Outbox + uplink benchmark: our path vs the bare libraries, same machine, same run.

1. durable put: ``Outbox.put`` (and ``Outbox.put_many`` in bursts of 256) vs a raw
   ``diskcache`` set loop with the same SQLite settings, interleaved, several rounds;
2. drain to a local Mosquitto: our uplink vs a bare paho QoS 1 publish loop, same messages,
   for several in-flight windows, interleaved, several rounds (throughput vs window: a PNG);
3. a 72 h backlog at 1 event/s (259 200 events of ~300 bytes) synced end to end, with a live
   defect event put during the drain and timed to the subscriber.

Writes bench/results/uplink.json and bench/results/uplink_window.png.
Ratios (ours / bare in the same round) are the figures to compare across machines; each is
reported as the median over rounds with its spread (min–max). The drain also records CPU time
per message — ours split into the appliance's process and the MQTT link process
(``uplink.link_process``), the bare loop's one process — which says why a ratio is what it is;
and, at the default window, our drain with the MQTT client in the appliance's own process
(``uplink.link_process: false``), as it was before the link process.
Absolute rates depend on the machine and on what else runs on it.
Usage: python bench/bench_uplink.py [--backlog N] [--messages N] [--rounds N]
                                   [--windows 8,64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import diskcache  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from edge import wiring  # noqa: E402
from edge.config import MoltbotConfig  # noqa: E402
from edge.config.model import UplinkSettings  # noqa: E402
from edge.outbox.store import Outbox, sqlite_settings  # noqa: E402
from edge.uplink.sync import Uplink  # noqa: E402
from tests.support import procfs  # noqa: E402
from tests.support.collector import Collector  # noqa: E402
from tests.support.mosquitto import MosquittoBroker  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PAYLOAD = {"line": 3, "station": "press-2", "value": 0.4213, "pad": "p" * 200}  # ~300 B sent
WINDOWS = (1, 8, 32, 64, 128)
DEFAULT_WINDOW: int = UplinkSettings.model_fields["inflight_window"].default
BACKLOG_GOAL_S = 300.0
LIVE_GOAL_S = 1.0
THROUGHPUT_GOAL = 500.0
BURST = 256  # events per put_many


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fill(outbox: Outbox, count: int) -> None:
    event = outbox.accept("telemetry", PAYLOAD)
    for start in range(0, count, BURST):
        outbox.put_many([event] * min(BURST, count - start))


def config_for(
    data_dir: Path, broker: MosquittoBroker, window: int, *, link_process: bool = True
) -> MoltbotConfig:
    return MoltbotConfig.model_validate(
        {
            "device": {"id": "bench", "site": "bench", "data_dir": str(data_dir)},
            "uplink": {
                "host": broker.host,
                "port": broker.port,
                "inflight_window": window,
                "link_process": link_process,
            },
        }
    )


def open_outbox(config: MoltbotConfig) -> Outbox:
    return wiring.open_outbox(config, has_rtc=True)


def bench_put(count: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """Interleaved rounds of bare diskcache sets and our puts (which goes first alternates, so
    that a drift of the disk within a round favours neither), then our put_many bursts. Each
    loop writes to a database of its own, so none pays for another's checkpoints."""
    config = MoltbotConfig.model_validate({"device": {"id": "b", "data_dir": str(workdir / "o")}})
    outbox = open_outbox(config)
    bursts = open_outbox(
        MoltbotConfig.model_validate({"device": {"id": "b", "data_dir": str(workdir / "burst")}})
    )
    raw_cache = diskcache.Cache(str(workdir / "raw"), **sqlite_settings(outbox.max_bytes))
    value = json.dumps(PAYLOAD).encode()
    rates: dict[str, list[float]] = {"bare": [], "put": [], "put_many": []}

    def bare(round_number: int) -> None:
        start = time.perf_counter()
        for n in range(count):
            raw_cache.set(f"m:{round_number:02d}{n:018d}", value)
        rates["bare"].append(count / (time.perf_counter() - start))

    def ours(_round_number: int) -> None:
        start = time.perf_counter()
        for _ in range(count):
            outbox.put("telemetry", PAYLOAD)
        rates["put"].append(count / (time.perf_counter() - start))

    for round_number in range(rounds):
        for loop in (bare, ours) if round_number % 2 == 0 else (ours, bare):
            loop(round_number)
        start = time.perf_counter()
        fill(bursts, count)
        rates["put_many"].append(count / (time.perf_counter() - start))
    raw_cache.close()
    outbox.close()
    bursts.close()
    pairs = list(zip(rates["put"], rates["bare"], rates["put_many"], strict=True))
    return {
        "messages_per_round": count,
        "rounds": rounds,
        "burst": BURST,
        "ours_per_s": spread(rates["put"]),
        "put_many_per_s": spread(rates["put_many"]),
        "bare_diskcache_per_s": spread(rates["bare"]),
        "ratio": spread([put / bare for put, bare, _ in pairs]),
        "put_many_vs_put": spread([many / put for put, _, many in pairs]),
        "put_many_vs_bare": spread([many / bare for _, bare, many in pairs]),
    }


def cpu_s() -> float:
    """CPU seconds of this process (every thread, user + system) so far."""
    times = os.times()
    return times.user + times.system


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds of another process (user + system) so far; 0 without one."""
    return procfs.cpu_s(pid) if pid is not None else 0.0


def bare_paho_rate(broker: MosquittoBroker, count: int, window: int) -> tuple[float, float]:
    """(messages/s, process CPU µs per message)."""
    payload = json.dumps({"id": "0" * 36, "data": PAYLOAD}).encode()
    done = threading.Event()
    acked = [0]

    def on_publish(*_args: object) -> None:
        acked[0] += 1
        if acked[0] >= count:
            done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="bare", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    start, cpu = time.perf_counter(), cpu_s()
    for _ in range(count):
        client.publish("bench/bare", payload, qos=1)
    done.wait(600)
    rate = count / (time.perf_counter() - start)
    cpu_per_message_us = (cpu_s() - cpu) / count * 1e6
    client.disconnect()
    client.loop_stop()
    return rate, cpu_per_message_us


def ours_drain_rate(
    broker: MosquittoBroker, count: int, window: int, workdir: Path, *, link_process: bool = True
) -> tuple[float, float, float]:
    """(messages/s, CPU µs per message of the appliance's process, of the link process) from
    connected to drained (all deleted)."""
    config = config_for(workdir, broker, window, link_process=link_process)
    outbox = open_outbox(config)
    fill(outbox, count)
    uplink = Uplink(outbox, config.uplink, wiring.topic_scheme(config))
    uplink.start()
    uplink.wait_connected(10)
    link_pid = uplink.link_process_pid
    start, cpu, link_cpu = time.perf_counter(), cpu_s(), process_cpu_s(link_pid)
    uplink.wait_drained(600)
    rate = count / (time.perf_counter() - start)
    cpu_per_message_us = (cpu_s() - cpu) / count * 1e6
    link_per_message_us = (process_cpu_s(link_pid) - link_cpu) / count * 1e6
    uplink.stop()
    outbox.close()
    return rate, cpu_per_message_us, link_per_message_us


def bench_drain(
    broker: MosquittoBroker,
    window: int,
    messages: int,
    rounds: int,
    workdir: Path,
    *,
    link_process: bool = True,
) -> dict[str, Any]:
    """Interleaved rounds of the bare paho loop and our drain at one in-flight window."""
    bare, ours, bare_cpu, ours_cpu, link_cpu = [], [], [], [], []
    for round_number in range(rounds):  # interleaved: drift hits both alike
        rate, cpu = bare_paho_rate(broker, messages, window)
        bare.append(rate)
        bare_cpu.append(cpu)
        folder = workdir / f"w{window}-{round_number}"
        rate, cpu, link = ours_drain_rate(
            broker, messages, window, folder, link_process=link_process
        )
        ours.append(rate)
        ours_cpu.append(cpu + link)
        link_cpu.append(link)
    return {
        "window": window,
        "link_process": link_process,
        "messages": messages,
        "rounds": rounds,
        "ours_per_s": spread(ours),
        "bare_paho_per_s": spread(bare),
        "ratio": spread([o / b for o, b in zip(ours, bare, strict=True)]),
        "ours_cpu_us_per_message": spread(ours_cpu),  # both processes
        "ours_link_cpu_us_per_message": spread(link_cpu),  # of it, the link process
        "bare_cpu_us_per_message": spread(bare_cpu),
    }


def bench_backlog(broker: MosquittoBroker, events: int, workdir: Path) -> dict[str, float]:
    config = config_for(workdir, broker, 64)
    outbox = open_outbox(config)
    start = time.perf_counter()
    fill(outbox, events)
    fill_s = time.perf_counter() - start
    consumer = Collector(broker.host, broker.port, "moltbot/bench/bench/defect", "bench-sub")
    uplink = Uplink(outbox, config.uplink, wiring.topic_scheme(config))
    uplink.start()
    uplink.wait_connected(10)
    start = time.perf_counter()
    time.sleep(min(5.0, events / 20000))  # well into the drain
    live_put = time.monotonic()
    live = outbox.put("defect", {"class": "scratch", "score": 0.97})
    consumer.wait_for_ids({live.id}, 30)
    live_latency = next(m.at for m in consumer.events() if m.json()["id"] == live.id) - live_put
    uplink.wait_drained(3600)
    sync_s = time.perf_counter() - start
    uplink.stop()
    consumer.close()
    outbox.close()
    return {
        "events": events,
        "fill_s": fill_s,
        "sync_s": sync_s,
        "sync_per_s": events / sync_s,
        "live_defect_latency_s": live_latency,
    }


def plot(windows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(
        [w["window"] for w in windows],
        [w["ours_per_s"]["median"] for w in windows],
        "o-",
        label="moltbot uplink (outbox → broker)",
    )
    axis.plot(
        [w["window"] for w in windows],
        [w["bare_paho_per_s"]["median"] for w in windows],
        "s--",
        label="bare paho QoS 1 loop",
    )
    axis.axhline(THROUGHPUT_GOAL, color="grey", linestyle=":", label="goal 500 msg/s")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("QoS 1 messages in flight")
    axis.set_ylabel("messages / s to local Mosquitto")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="per window and round")
    parser.add_argument("--puts", type=int, default=2000, help="per put run and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--backlog", type=int, default=259_200, help="events in the 72 h run (0: skip it)"
    )
    parser.add_argument(
        "--windows", default=",".join(map(str, WINDOWS)), help="in-flight windows, comma-separated"
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        broker = MosquittoBroker(workdir=workdir / "broker")
        broker.start()
        try:
            put = bench_put(args.puts, args.rounds, workdir / "put")
            windows = [
                bench_drain(broker, window, args.messages, args.rounds, workdir)
                for window in [int(w) for w in args.windows.split(",")]
            ]
            in_process = bench_drain(
                broker,
                DEFAULT_WINDOW,
                args.messages,
                args.rounds,
                workdir / "in-process",
                link_process=False,
            )
            backlog = (
                bench_backlog(broker, args.backlog, workdir / "backlog") if args.backlog else None
            )
        finally:
            broker.stop()
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "rounds": args.rounds,
        "note": "ratios compare with the bare library in the same round; absolute rates depend "
        "on the machine and its load",
        "durable_put": put,
        "drain_by_window": windows,
        "drain_in_process_default_window": in_process,
        "backlog_72h": backlog,
        "peak_rss_mb": peak_rss_mb,
        "budgets": {
            "backlog_sync_s": BACKLOG_GOAL_S,
            "live_defect_s": LIVE_GOAL_S,
            "drain_per_s": THROUGHPUT_GOAL,
        },
    }
    (RESULTS / "uplink.json").write_text(json.dumps(report, indent=2))
    plot(windows, RESULTS / "uplink_window.png")
    print(
        f"durable put ({args.rounds} rounds, median [min–max]): ours "
        f"{put['ours_per_s']['median']:.0f}/s, put_many {put['put_many_per_s']['median']:.0f}/s, "
        f"bare diskcache {put['bare_diskcache_per_s']['median']:.0f}/s; ratio "
        f"{fmt(put['ratio'])}, put_many/put {fmt(put['put_many_vs_put'])}"
    )
    print(
        f"{'window':>14} {'ours msg/s':>11} {'bare paho':>10} {'ratio (min–max)':>22}"
        f" {'CPU µs/msg: ours':>17} {'(link)':>7} {'bare':>6}"
    )
    for row in [*windows, in_process]:
        label = str(row["window"]) + ("" if row["link_process"] else " in-process")
        print(
            f"{label:>14} {row['ours_per_s']['median']:>11.0f} "
            f"{row['bare_paho_per_s']['median']:>10.0f} {fmt(row['ratio']):>22}"
            f" {row['ours_cpu_us_per_message']['median']:>17.1f}"
            f" {row['ours_link_cpu_us_per_message']['median']:>7.1f}"
            f" {row['bare_cpu_us_per_message']['median']:>6.1f}"
        )
    if backlog is None:
        print(f"peak RSS {peak_rss_mb:.0f} MB; results in {RESULTS}")
        return
    verdict = "OK" if backlog["sync_s"] < BACKLOG_GOAL_S else "OVER BUDGET"
    print(
        f"72 h backlog: {backlog['events']} events synced in {backlog['sync_s']:.1f} s "
        f"({backlog['sync_per_s']:.0f}/s; budget {BACKLOG_GOAL_S:.0f} s: {verdict}); "
        f"filled in {backlog['fill_s']:.1f} s"
    )
    print(
        f"live defect during the drain reached the subscriber in "
        f"{backlog['live_defect_latency_s'] * 1000:.0f} ms (budget {LIVE_GOAL_S * 1000:.0f} ms)"
    )
    print(f"peak RSS {peak_rss_mb:.0f} MB; results in {RESULTS}")


def fmt(values: dict[str, float]) -> str:
    return f"{values['median']:.2f} [{values['min']:.2f}–{values['max']:.2f}]"


if __name__ == "__main__":
    main()
