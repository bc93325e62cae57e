"""Prometheus metrics: histograms observed as work happens, the rest read from state at scrape.

Names follow ``moltbot_<thing>_<unit>`` and ``…_total`` for counters; ``process_*`` comes from
prometheus_client's process collector (resident memory among them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.inference.service import Prediction
from edge.outbox.store import OutboxStats
from edge.voice.listener import Utterance

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class StateSnapshot:
    """What the collector reads from the appliance at each scrape."""

    outbox: OutboxStats
    uplink_connected: bool | None
    uplink_published_total: int
    uplink_connects_total: int
    frames_total: int
    decisions_total: dict[str, int]
    services_up: dict[str, bool]
    service_restarts_total: dict[str, int]


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], StateSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        state = self._snapshot()
        outbox = state.outbox
        yield _gauge(
            "moltbot_outbox_depth_messages", "Messages waiting in the outbox", outbox.depth
        )
        yield _gauge("moltbot_outbox_size_bytes", "Bytes of messages in the outbox", outbox.bytes)
        yield _gauge(
            "moltbot_outbox_oldest_age_seconds",
            "Age of the oldest queued message",
            outbox.oldest_age_s or 0.0,
        )
        for name, value, text in (
            (
                "moltbot_outbox_delivered",
                outbox.delivered_total,
                "Messages acknowledged by the broker",
            ),
            (
                "moltbot_outbox_expired",
                outbox.expired_total,
                "Messages expired after the retention",
            ),
            ("moltbot_outbox_dropped", outbox.dropped_total, "Messages dropped at the outbox cap"),
            ("moltbot_outbox_refused", outbox.refused_total, "Messages refused (disk full)"),
            ("moltbot_frames", state.frames_total, "Frames run through the defect model"),
            ("moltbot_uplink_published", state.uplink_published_total, "MQTT publishes sent"),
            ("moltbot_uplink_connects", state.uplink_connects_total, "Broker connections made"),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield _gauge(
            "moltbot_uplink_connected",
            "1 while connected to the broker",
            1.0 if state.uplink_connected else 0.0,
        )
        decisions = CounterMetricFamily(
            "moltbot_decisions", "Defect events fired, by class", labels=["class"]
        )
        for label, count in sorted(state.decisions_total.items()):
            decisions.add_metric([label], count)
        yield decisions
        up = GaugeMetricFamily("moltbot_service_up", "1 while the service runs", labels=["service"])
        restarts = CounterMetricFamily(
            "moltbot_service_restarts", "In-process restarts after a failure", labels=["service"]
        )
        for service, running in sorted(state.services_up.items()):
            up.add_metric([service], 1.0 if running else 0.0)
            restarts.add_metric([service], state.service_restarts_total.get(service, 0))
        yield up
        yield restarts


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class Metrics:
    def __init__(self, snapshot: Callable[[], StateSnapshot]) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.inference_latency = Histogram(
            "moltbot_inference_latency_seconds",
            "Model run time per frame",
            ["model", "backend"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.asr_latency = Histogram(
            "moltbot_asr_latency_seconds",
            "End of speech to intent (voice service)",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(snapshot))

    def observe_prediction(self, prediction: Prediction) -> None:
        self.inference_latency.labels(prediction.model, prediction.backend).observe(
            prediction.latency_ms / 1000
        )

    def observe_utterance(self, utterance: Utterance) -> None:
        self.asr_latency.observe(utterance.end_of_speech_to_intent_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
