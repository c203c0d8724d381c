"""`/v1/batches` (OpenAI's Batch API): create, retrieve, list, cancel, and watch.

An unchanged `openai` SDK works here (`client.batches.create/retrieve/list/cancel`),
so errors use OpenAI's shape. The lines run as jobs on the bulk lane
(`jobs/batches.py` says how); `GET /v1/batches/{id}/events` streams the batch's
`batch.progress` events (SSE, replayable with `Last-Event-ID` / `after`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.channels import ChannelsPlugin
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from api.idempotency import fingerprint
from api.lookup import owner_filter
from api.openai_errors import openai_error
from api.state import Services
from api.streaming import subject_events
from api.strict import strict
from jobs import batches
from jobs.accounts import Principal
from jobs.batches import BatchList, BatchObject, CreateBatch
from jobs.errors import BatchNotFound
from jobs.webhooks import check_callback_url

if TYPE_CHECKING:
    StrictCreateBatch = CreateBatch
else:
    StrictCreateBatch = strict(CreateBatch)


class BatchController(Controller):
    """OpenAI-compatible Batch API."""

    path = "/v1/batches"
    tags = ("batches",)
    #: Every error of these routes in OpenAI's shape (Litestar reads this layer attribute; it is never mutated).
    exception_handlers = {Exception: openai_error}  # noqa: RUF012

    @post(summary="Create a batch", status_code=200)
    async def create(
        self,
        data: StrictCreateBatch,
        services: Services,
        principal: Principal,
        idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key")] = None,
    ) -> BatchObject:
        """Validate every line of a `batch` file, reserve credits for all of them, and enqueue them.

        Answers with the batch `in_progress`, or `failed` with `errors.data` naming each bad line
        (nothing reserved). 402 `insufficient_credits` when the lines' worst case exceeds the balance.
        `completion_window` is `24h` or any duration up to `168h` (`30m`, `90s`); past it, lines that
        have not run are cancelled and the batch ends `expired`. `callback_url` gets a signed
        `batch.<status>` webhook at the end.
        """
        if data.callback_url:
            await check_callback_url(data.callback_url, services.settings)
        row = await batches.create(services, services.catalog, principal.user_id, data,
                                   idempotency_key=idempotency_key, fingerprint=fingerprint(idempotency_key, data))
        return await batches.present(services.pool, row)

    @get(summary="List batches")
    async def list(
        self,
        services: Services,
        principal: Principal,
        after: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    ) -> BatchList:
        """Your batches, newest first; pass the last id as `after` for the next page."""
        return await batches.list_batches(services.pool, principal.user_id, after, limit)

    @get("/{batch_id:str}", summary="Retrieve a batch")
    async def retrieve(self, batch_id: str, services: Services, principal: Principal) -> BatchObject:
        """A batch with its live `request_counts`."""
        row = await batches.get(services.pool, batch_id, owner_filter(principal))
        if row is None:
            raise BatchNotFound(f"no batch {batch_id!r}")
        return await batches.present(services.pool, row)

    @post("/{batch_id:str}/cancel", summary="Cancel a batch", status_code=200)
    async def cancel(self, batch_id: str, services: Services, principal: Principal) -> BatchObject:
        """Cancel a batch: lines not finished are cancelled; the batch goes `cancelling`, then `cancelled`
        with the output of the lines that did finish. A batch that already ended is 409 `batch_finished`."""
        row = await batches.cancel(services, batch_id, owner_filter(principal))
        return await batches.present(services.pool, row)

    @get("/{batch_id:str}/events", summary="Watch a batch (SSE)")
    async def events(
        self,
        request: Request[Any, Any, Any],
        batch_id: str,
        services: Services,
        principal: Principal,
        channels: ChannelsPlugin,
        after: Annotated[int, Parameter(ge=0)] = 0,
    ) -> ServerSentEvent:
        """The batch's `batch.progress` events (`data`: status and request counts), ending with its last one.

        Resume with `after=SEQ` or the `Last-Event-ID` header.
        """
        row = await batches.get(services.pool, batch_id, owner_filter(principal))
        if row is None:
            raise BatchNotFound(f"no batch {batch_id!r}")
        last = request.headers.get("last-event-id")
        start = int(last) if last and last.isdigit() else after

        async def finished() -> bool:
            current = await batches.get(services.pool, batch_id, None)
            return current is None or current.status in batches.TERMINAL

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            async for event in subject_events(services, channels, row.id, row.owner_id, start, finished):
                yield ServerSentEventMessage(data=msgspec.json.encode(event).decode(), event=event.type,
                                             id=str(event.seq))
                if event.data.get("status") in batches.TERMINAL:
                    return

        return ServerSentEvent(messages())


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [BatchController]
