"""Over-the-air updates on a running appliance, and the checks that gate a freshly booted slot.

:class:`UpdateJobs` runs what ``POST /v1/system/update`` and the MQTT command ``cmd/update`` ask
for: one job at a time in its own thread (fetch, verify, ``rauc install``, then reboot at a safe
moment), each step an ``update`` event through the outbox. At the appliance's start it reports
what became of the update recorded before the last reboot (installed or rolled back; see
:mod:`edge.update.outcome`), waiting for ``moltbot-confirm-boot`` while the new slot is on trial.

:func:`boot_health_checks` turns the self-test's checks into the health gate's: the appliance
ready through its API, the active model's reference outputs, no failed systemd unit.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import MoltbotError
from edge.text_enum import TextEnum
from edge.update.confirm import NO_SLOTS, RAUC_SYSTEM_CONFS, rauc_system_conf
from edge.update.download import RetryPolicy
from edge.update.errors import NoSlotsError, UpdateBusyError
from edge.update.health_gate import CheckResult, HealthCheck
from edge.update.install import SlotInstaller, UpdateStep, install_update, reboot_system
from edge.update.outcome import UpdateOutcome, UpdateResult, previous_update_outcome, recheck
from edge.update.records import current_boot_id, wall_time_iso
from edge.update.request import UpdateRequest

if TYPE_CHECKING:
    from edge.config.model import MoltbotConfig, UpdateSettings
    from edge.outbox.store import Outbox

logger = logging.getLogger(__name__)
EVENT_KIND = "update"
RECHECK_S = 5.0  # how often the appliance looks for the health gate's verdict
SERVICE_CHECK_S = 30.0
SYSTEM_CHECK_S = 60.0


class JobState(TextEnum):
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLING = "installing"
    REBOOTING = "rebooting"  # installed; the reboot was asked for (last state of a job)
    INSTALLED = "installed"  # installed, not rebooted (reboot: false, or the reboot failed)
    FAILED = "failed"


@dataclass
class UpdateJob:
    """One update as ``GET /v1/system/update`` and the ``update`` events show it."""

    job: str
    url: str  # without credentials and query
    sha256: str
    reboot: bool
    requested_by: str
    state: JobState = JobState.QUEUED
    percent: int | None = None
    message: str = "queued"
    error: str | None = None
    hint: str | None = None
    version: str | None = None
    slot: str | None = None  # the slot the next boot starts
    started_at: str = field(default_factory=wall_time_iso)
    finished_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


class UpdateJobs:
    """One update job at a time, its progress as ``update`` events; the last update's fate."""

    def __init__(
        self,
        settings: UpdateSettings,
        updates_dir: Path,
        rauc: SlotInstaller,
        outbox: Outbox,
        *,
        quiet: threading.Lock,
        reboot: Callable[[], None] = reboot_system,
        boot_id: Callable[[], str] = current_boot_id,
        recheck_s: float = RECHECK_S,
    ) -> None:
        """``quiet`` is held while an inference decision is being made (the appliance's
        ``infer_lock``): the reboot waits for it, at most ``settings.reboot_delay_s``."""
        self.settings = settings
        self.updates_dir = updates_dir
        self.rauc = rauc
        self.outbox = outbox
        self.reboot = reboot
        self.boot_id = boot_id
        self.recheck_s = recheck_s
        self._quiet = quiet
        self._lock = threading.Lock()
        self._job: UpdateJob | None = None
        self._active = False  # from start() until its thread ends (the reboot included)
        self._runner: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.previous: UpdateOutcome | None = None

    # -- jobs -----------------------------------------------------------------------------

    def start(self, request: UpdateRequest, requested_by: str) -> dict[str, Any]:
        """Queue ``request``; its first state. ``UpdateBusyError`` while another job runs,
        ``NoSlotsError`` on a system without A/B slots (both: 409)."""
        self._require_slots()
        with self._lock:
            if self._active and self._job is not None:
                raise UpdateBusyError(
                    f"update {self._job.job} is still {self._job.state.value}",
                    where="GET /v1/system/update",
                    hint="one update at a time: wait for its last update event, then retry",
                )
            job = UpdateJob(
                job=uuid.uuid4().hex[:12],
                url=request.shown_url,
                sha256=request.sha256,
                reboot=request.reboot,
                requested_by=requested_by,
            )
            self._job, self._active = job, True
            self._runner = threading.Thread(
                target=self._run, args=(job, request), name=f"update-{job.job}", daemon=True
            )
            snapshot = job.to_json()
        logger.info("update %s queued by %s: %s", job.job, requested_by, job.url)
        self._publish(snapshot)  # before the thread's first event
        self._runner.start()
        return snapshot

    def command(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The MQTT command ``update``: same payload as the API, answered with the job."""
        return self.start(UpdateRequest.from_json(arguments), requested_by="mqtt")

    def report(self) -> dict[str, Any]:
        """The current or last job, and what became of the update before the last reboot."""
        with self._lock:
            job = self._job.to_json() if self._job is not None else None
        previous = self.previous
        return {"job": job, "previous_update": previous.event() if previous else None}

    def slots(self) -> dict[str, Any]:
        self._require_slots()
        return self.rauc.status().to_json()

    def _require_slots(self) -> None:
        configured = self.settings.rauc_system_conf
        if rauc_system_conf(configured) is None:
            places = [configured] if configured is not None else RAUC_SYSTEM_CONFS
            raise NoSlotsError(
                f"{NO_SLOTS}: RAUC has no system.conf",
                where=", ".join(str(path) for path in places),
                hint="over-the-air updates need an image with A/B slots (RAUC); "
                "set updates.rauc_system_conf if its system.conf is elsewhere",
            )

    def wait(self, timeout_s: float) -> bool:
        """True once no job is running (tests, shutdown)."""
        runner = self._runner
        if runner is not None:
            runner.join(timeout_s)
        return runner is None or not runner.is_alive()

    def _run(self, job: UpdateJob, request: UpdateRequest) -> None:
        try:
            self._update(job, request)
        finally:
            with self._lock:
                self._active = False

    def _update(self, job: UpdateJob, request: UpdateRequest) -> None:
        settings = self.settings
        try:
            result = install_update(
                request.url,
                request.sha256,
                self.updates_dir,
                self.rauc,
                emit=lambda line: logger.info("update %s: %s", job.job, line),
                step=lambda step: self._step(job, step),
                retry=RetryPolicy(
                    attempts=settings.download_attempts, timeout_s=settings.download_timeout_s
                ),
                margin_bytes=settings.free_space_margin_mb * 2**20,
                boot_id=self.boot_id(),
            )
        except MoltbotError as exc:
            self._fail(job, request, exc)
            return
        except Exception as exc:  # a job never ends silently: the event says how it failed
            logger.exception("update %s failed", job.job)
            self._finish(job, JobState.FAILED, "failed", error=f"{type(exc).__name__}: {exc}")
            return
        self._change(job, version=result.bundle.version, slot=result.next_slot)
        if result.pending is None or not job.reboot:
            why = "reboot: false" if result.pending is not None else "no other slot to boot"
            self._finish(job, JobState.INSTALLED, f"installed {result.bundle.version} ({why})")
            return
        self._finish(
            job,
            JobState.REBOOTING,
            f"installed {result.bundle.version}; rebooting into {result.next_slot}",
        )
        try:
            self._reboot_when_quiet()
        except MoltbotError as exc:
            self._finish(
                job,
                JobState.INSTALLED,
                f"installed {result.bundle.version}, but the reboot failed",
                error=exc.what,
                hint=exc.hint,
            )

    def _reboot_when_quiet(self) -> None:
        """Reboot once no inference decision is in flight, or after ``reboot_delay_s``."""
        delay = self.settings.reboot_delay_s
        quiet = self._quiet.acquire(timeout=delay) if delay > 0 else self._quiet.acquire(False)
        if not quiet:
            logger.warning("rebooting with an inference still in flight after %.0f s", delay)
        try:
            self.reboot()
        finally:
            if quiet:
                self._quiet.release()

    def _step(self, job: UpdateJob, step: UpdateStep) -> None:
        state = JobState(step.state)
        changed = state != job.state or step.percent != job.percent
        self._change(job, state=state, percent=step.percent, message=step.message)
        if changed:  # rauc prints several lines per percent: one event for each percent
            self._publish(self._snapshot())

    def _fail(self, job: UpdateJob, request: UpdateRequest, exc: MoltbotError) -> None:
        def hide(text: str | None) -> str | None:  # a pre-signed URL's signature stays here
            return text.replace(request.url, request.shown_url) if text else text

        where = hide(exc.where)
        error = f"{hide(exc.what)} (where: {where})" if where else hide(exc.what)
        logger.warning("update %s failed: %s", job.job, error)
        self._finish(job, JobState.FAILED, "failed", error=error, hint=hide(exc.hint))

    def _finish(
        self,
        job: UpdateJob,
        state: JobState,
        message: str,
        *,
        error: str | None = None,
        hint: str | None = None,
    ) -> None:
        self._change(
            job,
            state=state,
            percent=None,
            message=message,
            error=error,
            hint=hint,
            finished_at=wall_time_iso(),
        )
        self._publish(self._snapshot())

    def _change(self, job: UpdateJob, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(job, name, value)

    def _snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._job.to_json() if self._job is not None else {}

    # -- the update before the last reboot ------------------------------------------------

    def watch_previous_update(self) -> None:
        """Report (in a thread) what became of the update recorded before the last reboot."""
        self._watcher = threading.Thread(
            target=self._previous_update, name="update-outcome", daemon=True
        )
        self._watcher.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop watching for the health gate's verdict (a running job is left to finish)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout_s)

    def _previous_update(self) -> None:
        attempts = self.settings.boot_attempts
        try:
            outcome = previous_update_outcome(
                self.rauc, self.updates_dir, boot_attempts=attempts, boot_id=self.boot_id()
            )
            if outcome is not None and outcome.result is UpdateResult.ON_TRIAL:
                logger.info(
                    "update %s: %s is on trial, waiting for moltbot-confirm-boot's verdict",
                    outcome.pending.version,
                    outcome.booted_slot,
                )
            while outcome is not None and outcome.result is UpdateResult.ON_TRIAL:
                self.previous = outcome
                if self._stop.wait(self.recheck_s):
                    return
                outcome = recheck(
                    outcome, self.updates_dir, boot_attempts=attempts, boot_id=self.boot_id()
                )
        except MoltbotError as exc:  # pending.json stays: the next start tries again
            logger.warning("cannot tell what became of the last update: %s", exc)
            return
        except Exception:
            logger.exception("cannot tell what became of the last update")
            return
        self.previous = outcome
        if outcome is not None and outcome.settled:
            self._publish(outcome.event())

    def _publish(self, payload: dict[str, Any]) -> None:
        try:
            self.outbox.put(EVENT_KIND, payload)
        except MoltbotError as exc:  # the job goes on; GET /v1/system/update still shows it
            logger.error("cannot queue an update event: %s", exc)


def boot_health_checks(config: MoltbotConfig) -> list[HealthCheck]:
    """The self-test's checks as the health gate's: each returns in the time it is given."""
    from edge import selftest  # noqa: PLC0415 - onnxruntime etc. only for confirm-boot

    checks: list[HealthCheck] = []
    if config.api.enabled:
        url = f"http://127.0.0.1:{config.api.port}/readyz"

        def service(left_s: float) -> CheckResult:
            ok, detail = selftest.wait_http(url, max(1.0, min(left_s, SERVICE_CHECK_S)))
            return CheckResult(ok, f"/readyz: {' '.join(detail.split())[:200]}")

        checks.append(HealthCheck("service", service))
    if config.inference.enabled:

        def reference(_left_s: float) -> CheckResult:
            try:
                return CheckResult(True, selftest.reference_inference(config))
            except MoltbotError as exc:  # a wrong result does not fix itself by waiting
                return CheckResult(False, exc.what, final=True)

        checks.append(HealthCheck("reference inference", reference))

    def system(left_s: float) -> CheckResult:
        return CheckResult(*selftest.boot_state(max(1.0, min(left_s, SYSTEM_CHECK_S))))

    checks.append(HealthCheck("system", system))
    return checks
