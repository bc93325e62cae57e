"""The one MQTT topic scheme.

| topic | what | retained | QoS |
|---|---|---|---|
| ``{prefix}/{site}/{device}/{kind}`` | events: ``defect``, ``voice``, ``telemetry``, ``error``, ``update``, … (JSON envelope) | no | 1 |
| ``{prefix}/{site}/{device}/status`` | availability: ``online`` / ``offline`` (last will) | yes | 1 |
| ``{prefix}/{site}/{device}/status/report`` | events of kind ``status`` (JSON envelope) | no | 1 |
| ``{prefix}/{site}/{device}/cmd/{name}`` | commands to the device (JSON object) | no | 1 |

Events of kind ``status`` go one level down so that ``…/status`` keeps only the retained
availability string that dashboards and broker bridges watch. Events of kind ``update`` report an
over-the-air update: its job's progress (``cmd/update``, ``POST /v1/system/update``) and, after
the reboot, whether it was installed or rolled back.
"""  # noqa: E501

from __future__ import annotations

from dataclasses import dataclass

AVAILABILITY_ONLINE = b"online"
AVAILABILITY_OFFLINE = b"offline"


@dataclass(frozen=True)
class TopicScheme:
    prefix: str
    site: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.device}"

    def event(self, kind: str) -> str:
        if kind == "status":
            return f"{self.base}/status/report"
        return f"{self.base}/{kind}"

    @property
    def availability(self) -> str:
        return f"{self.base}/status"

    @property
    def command_filter(self) -> str:
        return f"{self.base}/cmd/#"

    def command_name(self, topic: str) -> str | None:
        prefix = f"{self.base}/cmd/"
        return topic[len(prefix) :] if topic.startswith(prefix) else None
