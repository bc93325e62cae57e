"""The Sparkplug B topic namespace: ``spBv1.0/{group}/{type}/{edge node}[/{device}]``."""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "spBv1.0"


@dataclass(frozen=True)
class SparkplugTopics:
    group_id: str
    edge_node_id: str
    device_id: str

    def node(self, message_type: str) -> str:
        return f"{NAMESPACE}/{self.group_id}/{message_type}/{self.edge_node_id}"

    def device(self, message_type: str) -> str:
        return f"{self.node(message_type)}/{self.device_id}"

    @staticmethod
    def state(host_id: str) -> str:
        """The primary host application's STATE topic (Sparkplug 3.0)."""
        return f"{NAMESPACE}/STATE/{host_id}"
