"""Live job events: WS `/v1/jobs/{id}/stream`, SSE `/v1/jobs/{id}/events`, WS `/v1/events`.

WebSockets can't carry an HTTP error status once accepted, so a refused
subscription is accepted, sent one problem document, and closed with
`4000 + status` (4401 unauthenticated, 4404 not found). Credentials come
from the `Authorization` header or `?access_token=`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, WebSocket, get, websocket
from litestar.channels import ChannelsPlugin
from litestar.exceptions import WebSocketDisconnect
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from loguru import logger

from api.auth import authenticate
from api.errors import problem
from api.lookup import load_job
from api.state import Services
from api.streaming import job_events, owner_events
from jobs import metrics
from jobs.accounts import Principal
from jobs.errors import SwitchyardError, Unauthenticated
from jobs.events import Event

_encode = msgspec.json.encode


async def _refuse(socket: WebSocket[Any, Any, Any], status: int, code: str, detail: str) -> None:
    await socket.accept()
    rid = socket.scope.get("state", {}).get("request_id")
    await socket.send_bytes(_encode(problem(status, code, detail, rid)))
    await socket.close(code=4000 + status, reason=code)


async def _send_all(socket: WebSocket[Any, Any, Any], events: AsyncIterator[Event], endpoint: str) -> None:
    await socket.accept()
    gauge = metrics.WEBSOCKETS.labels(endpoint=endpoint)
    gauge.inc()
    try:
        async for event in events:
            await socket.send_data(_encode(event).decode(), mode="text")
    except WebSocketDisconnect:
        return
    except Exception:
        # Litestar closes the socket with 4500 and logs nothing: say what broke the stream, once.
        logger.bind(endpoint=endpoint, request_id=socket.scope.get("state", {}).get("request_id")).exception(
            "event stream failed")
        raise
    finally:
        gauge.dec()
    await socket.close(code=1000)


async def _ws_principal(socket: WebSocket[Any, Any, Any], services: Services) -> Principal | None:
    try:
        return await authenticate(socket, services, allow_query=True)
    except Unauthenticated as exc:
        await _refuse(socket, exc.status, Unauthenticated.code, exc.message)
        return None


@websocket("/v1/jobs/{job_id:str}/stream")
async def job_stream(
    socket: WebSocket[Any, Any, Any], job_id: str, services: Services, channels: ChannelsPlugin,
    after: Annotated[int, Parameter(ge=0)] = 0,
) -> None:
    """Every event of one job, from `after` (exclusive), each once and in order; closes after the last."""
    principal = await _ws_principal(socket, services)
    if principal is None:
        return
    try:
        job = await load_job(services, principal, job_id)
    except SwitchyardError as exc:
        await _refuse(socket, exc.status, exc.public_code, exc.message)
        return
    await _send_all(socket, job_events(services, channels, job, after), "ws_job")


@websocket("/v1/events")
async def all_events(socket: WebSocket[Any, Any, Any], services: Services, channels: ChannelsPlugin) -> None:
    """Live events of all the caller's jobs."""
    principal = await _ws_principal(socket, services)
    if principal is None:
        return
    await _send_all(socket, owner_events(channels, principal.user_id), "ws_events")


@get("/v1/jobs/{job_id:str}/events", tags=["jobs"], summary="Stream a job's events (SSE)")
async def job_sse(
    request: Request[Any, Any, Any], job_id: str, services: Services, channels: ChannelsPlugin,
    after: Annotated[int, Parameter(ge=0)] = 0,
) -> ServerSentEvent:
    """Server-sent events of one job; resume with `Last-Event-ID` or `?after=`."""
    principal = await authenticate(request, services, allow_query=True)
    job = await load_job(services, principal, job_id)
    last_id = request.headers.get("last-event-id", "")
    # (Not `int | None`: Litestar would drop `ge=0` from the OpenAPI schema of an optional parameter.)
    start = after or (int(last_id) if last_id.isdigit() else 0)

    async def messages() -> AsyncIterator[ServerSentEventMessage]:
        gauge = metrics.WEBSOCKETS.labels(endpoint="sse_job")
        gauge.inc()
        try:
            async for event in job_events(services, channels, job, start):
                yield ServerSentEventMessage(data=_encode(event).decode(), event=event.type, id=str(event.seq))
        finally:
            gauge.dec()

    return ServerSentEvent(messages())


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [job_stream, job_sse, all_events]
