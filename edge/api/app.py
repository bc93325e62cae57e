"""The local HTTP API (FastAPI): health, readiness, metrics, inference, outbox, models, events,
over-the-air updates and the A/B slots.

Every route but ``/healthz`` and ``/readyz`` (and ``/metrics`` unless
``api.metrics_require_token``) needs ``Authorization: Bearer <token>``, compared in constant
time. Errors are JSON ``{"error", "where", "hint"}``; no stack trace ever reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge import __version__
from edge.api.guard import AUTH_HINT, RequestGuard, bearer_matches
from edge.config.view import redacted_tree
from edge.errors import InputError, MoltbotError
from edge.release import installed_release
from edge.triggers.parts import PART_ID_PATTERN
from edge.update.errors import UpdateConflictError
from edge.update.request import MAX_URL_CHARS, UpdateRequest

if TYPE_CHECKING:
    from edge.api.facade import ApplianceFacade

logger = logging.getLogger(__name__)
IMAGE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/bmp",
        "image/x-portable-graymap",
        "image/tiff",
        "application/octet-stream",
    }
)
AUDIO_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"})
SSE_KEEPALIVE_S = 15.0
UPLOAD_PATHS = frozenset({"/v1/infer", "/v1/asr"})  # bodies up to api.max_upload_bytes
OUTBOX_PAGE_MAX = 500  # messages per GET /v1/outbox; page on with ?after=


class ErrorBody(BaseModel):
    error: str
    where: str | None = None
    hint: str | None = None


class InferResult(BaseModel):
    model: str
    backend: str
    precision: str
    label: str
    score: float
    scores: dict[str, float]
    latency_ms: float
    events: list[str] = Field(description="ids of the defect events queued (with ?trigger=true)")


class ActivateRequest(BaseModel):
    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class UpdateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1, max_length=MAX_URL_CHARS, description="http(s) URL of the RAUC bundle"
    )
    sha256: str = Field(
        pattern=r"^[0-9A-Fa-f]{64}$", description="the bundle's sha256 (from its SHA256SUMS)"
    )
    reboot: bool = Field(
        True,
        description="reboot into the new slot once installed, when no inference is in flight "
        "(at most updates.reboot_delay_s later)",
    )


def _error(
    status: int, what: str, where: str | None = None, hint: str | None = None
) -> JSONResponse:
    return JSONResponse(ErrorBody(error=what, where=where, hint=hint).model_dump(), status)


# Module level: with postponed annotations FastAPI resolves these names in the module's globals.
BEARER = HTTPBearer(auto_error=False)
ModelName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
PartIdQuery = Annotated[
    str | None,
    Query(
        pattern=PART_ID_PATTERN,
        max_length=128,
        description="the part's id (barcode, serial), carried in its defect event",
    ),
]
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 422: {"model": ErrorBody}}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    413: {"model": ErrorBody},
    415: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


def create_app(appliance: ApplianceFacade) -> FastAPI:
    app = FastAPI(
        title="Moltbot Edge appliance API",
        version=__version__,
        description="Local API of one Moltbot Edge appliance.",
    )

    def require_token(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> None:
        # RequestGuard already answered 401 before reading the body; this documents the scheme
        # in the OpenAPI schema and keeps a route safe if it is ever mounted without the guard.
        del credentials
        if not bearer_matches(request.headers.get("authorization"), appliance.token):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    authorised = [Depends(require_token)]
    _add_error_handlers(app)
    _add_health_routes(app, appliance, authorised)
    _add_inference_routes(app, appliance, authorised)
    _add_state_routes(app, appliance, authorised)
    _add_voice_routes(app, appliance, authorised)
    _add_system_routes(app, appliance, authorised)

    @app.middleware("http")
    async def refuse_while_stopping(request: Request, call_next: Any) -> Response:
        if not appliance.accepting and request.url.path.startswith("/v1/"):
            return _error(503, "the appliance is shutting down", hint="retry on the next start")
        response: Response = await call_next(request)
        return response

    metrics_protected = appliance.config.api.metrics_require_token
    app.add_middleware(
        RequestGuard,  # outermost: before anything reads a body
        token=lambda: appliance.token,
        is_protected=lambda path: (
            path.startswith("/v1/") or (metrics_protected and path == "/metrics")
        ),
        upload_paths=UPLOAD_PATHS,
        max_upload_bytes=appliance.config.api.max_upload_bytes,
    )
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and Starlette's
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        where, hint = _http_error_context(request, exc.status_code)
        response = _error(exc.status_code, str(exc.detail), where, hint)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error(422, f"invalid request: {problems}", hint="see /docs for the schema")

    @app.exception_handler(MoltbotError)
    async def moltbot_error(_request: Request, exc: MoltbotError) -> JSONResponse:
        status = 422 if isinstance(exc, InputError) else 503
        return _error(status, exc.what, exc.where, exc.hint)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        logger.error("unexpected API error %s", incident, exc_info=exc)
        return _error(500, f"internal error (incident {incident}; see the device log)")


def _http_error_context(request: Request, status: int) -> tuple[str | None, str | None]:
    """Where and what to do, for the errors FastAPI and Starlette raise themselves."""
    route = f"{request.method} {request.url.path}"
    if status == 404:
        return route, "see /docs (or /openapi.json) for the routes"
    if status == 405:
        return route, "see /docs for the methods this route takes"
    if status == 401:
        return "Authorization header", AUTH_HINT
    if status == 400:
        return f"{route}: request body", "send a JSON object as /docs describes"
    return route, None


def _add_health_routes(app: FastAPI, appliance: ApplianceFacade, authorised: list[Any]) -> None:
    release = installed_release()

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str | None]:
        """Liveness: the process answers; with the application's version and the root file
        system's release (the A/B update it came from; null where no image installed it)."""
        return {"status": "ok", "version": __version__, "release": release}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz() -> JSONResponse:
        """Readiness: model loaded, outbox writable, uplink not refused; 503 lists reasons."""
        ready, checks = appliance.readiness()
        return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)

    guard = authorised if appliance.config.api.metrics_require_token else []

    @app.get("/metrics", tags=["health"], dependencies=guard, response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text format."""
        body = await asyncio.to_thread(appliance.metrics.render)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def _add_inference_routes(app: FastAPI, appliance: ApplianceFacade, authorised: list[Any]) -> None:
    limit = appliance.config.api.max_upload_bytes

    @app.post(
        "/v1/infer",
        tags=["inference"],
        dependencies=authorised,
        responses=UPLOAD_ERRORS,
    )
    async def infer(
        request: Request,
        trigger: Annotated[
            bool, Query(description="run the trigger decision and queue defect events")
        ] = False,
        part_id: PartIdQuery = None,
    ) -> InferResult:
        """Classify one image (the request body, ``Content-Type: image/png`` etc.)."""
        data = await _read_upload(
            request, IMAGE_TYPES, limit, "the image bytes as image/png, image/jpeg or image/bmp"
        )
        prediction, events = await asyncio.to_thread(appliance.infer, data, trigger, part_id)
        return InferResult(**prediction.to_json(), events=events)

    @app.post(
        "/v1/capture",
        tags=["inference"],
        dependencies=authorised,
        responses={**ERRORS, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    async def capture(
        part_id: PartIdQuery = None,
    ) -> Response:
        """Take the camera's next frame and inspect it as one part (a line's capture trigger)."""
        camera = appliance.camera
        if camera is None:
            return _error(
                409,
                "no camera is configured",
                where="camera.enabled",
                hint="set camera.enabled: true (and camera.mode: part) in the site file",
            )
        arguments = {} if part_id is None else {"part_id": part_id}
        return JSONResponse(await asyncio.to_thread(camera.capture, arguments))

    @app.get("/v1/models", tags=["models"], dependencies=authorised, responses=ERRORS)
    async def models() -> dict[str, Any]:
        """Installed versions and what is serving, on which backend, and why."""
        return await asyncio.to_thread(appliance.models_report)

    @app.post(
        "/v1/models/{name}/activate",
        tags=["models"],
        dependencies=authorised,
        responses={**ERRORS, 503: {"model": ErrorBody}},
    )
    async def activate(name: ModelName, body: ActivateRequest) -> dict[str, Any]:
        """Verify, load, check and swap in NAME@VERSION; the current one serves until then."""
        return await asyncio.to_thread(appliance.activate, f"{name}@{body.version}")

    @app.post(
        "/v1/models/{name}/rollback",
        tags=["models"],
        dependencies=authorised,
        responses={**ERRORS, 503: {"model": ErrorBody}},
    )
    async def rollback(name: ModelName) -> dict[str, Any]:
        """Go back to the previously active version."""
        return await asyncio.to_thread(appliance.rollback, name)


def _add_voice_routes(app: FastAPI, appliance: ApplianceFacade, authorised: list[Any]) -> None:
    limit = appliance.config.api.max_upload_bytes

    @app.post(
        "/v1/asr",
        tags=["voice"],
        dependencies=authorised,
        responses=UPLOAD_ERRORS,
    )
    async def asr(request: Request) -> dict[str, Any]:
        """Recognise a WAV upload (``Content-Type: audio/wav``): text, intent, timings; a
        recognised command acts and is published like a spoken one."""
        data = await _read_upload(request, AUDIO_TYPES, limit, "a WAV file as audio/wav")
        return {"utterances": await asyncio.to_thread(appliance.transcribe, data)}


def _add_state_routes(app: FastAPI, appliance: ApplianceFacade, authorised: list[Any]) -> None:
    @app.get("/v1/outbox", tags=["outbox"], dependencies=authorised, responses=ERRORS)
    async def outbox(
        peek: Annotated[
            int, Query(ge=0, le=OUTBOX_PAGE_MAX, description="how many messages to list")
        ] = 0,
        after: Annotated[
            int | None,
            Query(ge=0, description="list messages with a sequence number above this (paging)"),
        ] = None,
    ) -> dict[str, Any]:
        """Outbox statistics, and up to ``peek`` messages, oldest first, after sequence number
        ``after``. ``next_after`` is the ``after`` of the next page (null at the end)."""
        return await asyncio.to_thread(appliance.outbox_report, peek, after or 0)

    @app.get("/v1/config", tags=["config"], dependencies=authorised, responses=ERRORS)
    async def config() -> dict[str, Any]:
        """The effective config, secrets redacted."""
        return redacted_tree(appliance.config)

    @app.get("/v1/events", tags=["events"], dependencies=authorised, responses=ERRORS)
    async def events(request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
        """Recent events; with ``Accept: text/event-stream`` a live server-sent-event feed."""
        if "text/event-stream" not in request.headers.get("accept", ""):
            return JSONResponse({"events": appliance.events.recent(limit)})
        return StreamingResponse(_sse(appliance, request), media_type="text/event-stream")


def _add_system_routes(app: FastAPI, appliance: ApplianceFacade, authorised: list[Any]) -> None:
    @app.post(
        "/v1/system/update",
        tags=["system"],
        dependencies=authorised,
        status_code=202,
        responses={**ERRORS, 409: {"model": ErrorBody}},
    )
    async def update(body: UpdateBody) -> JSONResponse:
        """Fetch, verify and install a RAUC bundle into the other slot, then reboot into it.

        Answers 202 with the job at once (409 while another one runs, or without A/B slots); its
        progress and result are ``update`` events (``GET /v1/events``, MQTT) and
        ``GET /v1/system/update``."""
        request = UpdateRequest.from_json(body.model_dump())
        try:
            job = await asyncio.to_thread(appliance.start_update, request, "api")
        except UpdateConflictError as exc:  # one is running, or no A/B slots here
            return _error(409, exc.what, exc.where, exc.hint)
        return JSONResponse(job, 202, headers={"Location": "/v1/system/update"})

    @app.get("/v1/system/update", tags=["system"], dependencies=authorised, responses=ERRORS)
    async def update_state() -> dict[str, Any]:
        """The current or last update job (state, percent, message, error) since the start, and
        what became of the update before the last reboot (installed or rolled back)."""
        return appliance.update_report()

    @app.get(
        "/v1/system/slots",
        tags=["system"],
        dependencies=authorised,
        responses={**ERRORS, 409: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )
    async def slots() -> Any:
        """The A/B slots as RAUC and U-Boot see them: booted, next boot, attempts left (409 on
        a system without A/B slots, 503 when RAUC does not answer)."""
        try:
            return await asyncio.to_thread(appliance.slots_report)
        except UpdateConflictError as exc:
            return _error(409, exc.what, exc.where, exc.hint)


async def _read_upload(
    request: Request, allowed: frozenset[str], limit: int, expected: str
) -> bytes:
    """The request body, refused with 415 for another content type, 413 when too large."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in allowed:
        raise HTTPException(
            415, f"unsupported content type {content_type or 'none'!r}; send {expected}"
        )
    return await _read_limited(request, limit, expected)


async def _read_limited(request: Request, limit: int, expected: str) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            413, f"upload of {declared} bytes is over api.max_upload_bytes ({limit})"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"upload is over api.max_upload_bytes ({limit})")
        chunks.append(chunk)
    if size == 0:
        raise HTTPException(422, f"empty body: send {expected}")
    return b"".join(chunks)


async def _sse(appliance: ApplianceFacade, request: Request) -> AsyncIterator[bytes]:
    queue = appliance.events.subscribe()
    try:
        for event in appliance.events.recent(20):
            yield f"id: {event['id']}\ndata: {json.dumps(event)}\n\n".encode()
        while not await request.is_disconnected() and appliance.accepting:
            try:
                event = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            yield f"id: {event['id']}\ndata: {json.dumps(event)}\n\n".encode()
    finally:
        appliance.events.unsubscribe(queue)
