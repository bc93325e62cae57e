"""What the local API needs from the appliance it serves, and nothing more.

``edge.api.app.create_app`` takes any object of this shape; ``edge.operations`` implements it
for the running appliance. The API never imports the service, so the service may import the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edge.api.events import EventFeed
    from edge.api.metrics import Metrics
    from edge.camera.inspection import CameraInspection
    from edge.config.model import MoltbotConfig
    from edge.inference.service import Prediction
    from edge.update.request import UpdateRequest


class ApplianceFacade(Protocol):
    """The running appliance as the API sees it."""

    config: MoltbotConfig
    token: str
    accepting: bool  # False while shutting down: /v1/ answers 503
    metrics: Metrics
    events: EventFeed
    camera: CameraInspection | None

    def readiness(self) -> tuple[bool, dict[str, str]]: ...

    def infer(
        self, data: bytes, trigger: bool, part_id: str | None = None
    ) -> tuple[Prediction, list[str]]: ...

    def transcribe(self, wav: bytes) -> list[dict[str, Any]]: ...

    def activate(self, ref: str) -> dict[str, Any]: ...

    def rollback(self, name: str) -> dict[str, Any]: ...

    def models_report(self) -> dict[str, Any]: ...

    def outbox_report(self, peek: int, after: int = 0) -> dict[str, Any]: ...

    def start_update(self, request: UpdateRequest, requested_by: str) -> dict[str, Any]: ...

    def update_report(self) -> dict[str, Any]: ...

    def slots_report(self) -> dict[str, Any]: ...
