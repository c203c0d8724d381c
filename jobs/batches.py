"""Batches (OpenAI's Batch API) on our own queue: validate, fan out, drain, finalize.

    validating ─► in_progress ─► finalizing ─► completed | expired
        │              │
        └► failed      └► cancelling ─► cancelled          (any time before the end)

Each step is resumable, so no restart loses or doubles a line:

- **create**: the batch row is committed `validating` with a lease, then the
  input file is streamed through a validator (a thread: it is CPU work) that
  checks every line — JSON, method, url, body, model, size, duplicate
  `custom_id` — and computes each line's worst-case cost. Any error: the batch
  is `failed` with `errors.data[]` naming the lines, and nothing is reserved.
- **fan-out**: one transaction moves the batch to `in_progress` (a
  conditional UPDATE: two resumers cannot both win), reserves the credits of
  every line at once (`credits.reserve_batch`; 402 `insufficient_credits`
  when short) and COPYs one job per line onto the bulk lane. After the
  commit the messages are sent pipelined (`jobs.broker.send_jobs`) and
  `sent_at` is stamped. A crash before that: the maintenance loop sees the
  lease expire and resumes (validation from scratch, or sending what is not
  in Redis yet).
- **drain**: workers run the lines like any job; a line settles its charge
  against the batch's reservation (`credits.settle_batch_line`) and
  publishes no per-line events.
- **progress and end** (maintenance, every tick, for each live batch): the
  counts are read from the lines (`batch.progress` events when they moved);
  past `expires_at` the lines that have not started are cancelled; a
  `cancelling` batch cancels its lines; once no line is live the batch is
  finalized: output and error files written in OpenAI's line format (every
  line exactly once), what was not spent released (`credits.release_batch`,
  once), and the `callback_url` webhook inserted — in one transaction.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import anyio.to_thread
import msgspec
from loguru import logger
from psycopg import AsyncConnection
from psycopg.rows import kwargs_row
from psycopg_pool import AsyncConnectionPool

from jobs import credits, files, metrics
from jobs.broker import NAMESPACE, job_message, send_jobs, unsent, withdraw
from jobs.catalog import Catalog, Mode, Route
from jobs.clients import Clients
from jobs.enqueue import insert_job_of, send_after_commit
from jobs.errors import (
    BatchFinished,
    BatchNotFound,
    FileNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidBatch,
    UnknownModel,
)
from jobs.events import CANCEL_CHANNEL
from jobs.ids import uuid7
from jobs.kinds import CallbackUrl, ChatCompletionJob, EmbeddingJob, Metadata, WebhookInput, WebhookJob
from jobs.openai_format import (
    ChatCompletionRequest,
    EmbeddingRequest,
    OpenAIList,
    chat_job,
    completion_body,
    embedding_body,
    embedding_job,
    openai_page,
)
from jobs.queues import held_dead
from jobs.states import EventType, Queue

#: The endpoints a batch may target.
Endpoint = Literal["/v1/chat/completions", "/v1/embeddings"]
#: The queue batch lines run on (`chat_job(..., bulk=True)` puts them there).
BULK_LANE = Queue.CHAT_BULK
#: Statuses a batch never leaves.
TERMINAL = ("completed", "failed", "expired", "cancelled")
LIVE = ("validating", "in_progress", "finalizing", "cancelling")
#: How long a validation or fan-out may take before another process resumes it.
VALIDATION_LEASE_SECONDS = 300
FINALIZE_LEASE_SECONDS = 300
#: How long sending a fan-out's messages may take before the maintenance loop sends what is missing.
SEND_LEASE_SECONDS = 60
#: Errors listed in a failed batch's `errors.data` (the count says how many there were).
MAX_LISTED_ERRORS = 1000
#: The longest `completion_window` (OpenAI's only value is `24h`; shorter ones are a Switchyard extension).
MAX_WINDOW_SECONDS = 7 * 86_400


class CreateBatch(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/batches`: OpenAI's fields, plus Switchyard's `callback_url`."""

    input_file_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    endpoint: Endpoint
    #: `24h` (OpenAI), or any window up to 7 days written as `<n>s`, `<n>m` or `<n>h`.
    completion_window: Annotated[str, msgspec.Meta(max_length=16)] = "24h"
    metadata: Metadata | None = None
    #: POSTed a signed `batch.completed` / `batch.failed` / `batch.expired` / `batch.cancelled` at the end.
    callback_url: CallbackUrl | None = None


class BatchRow(msgspec.Struct, kw_only=True):
    """A row of the `batches` table."""

    id: str
    owner_id: UUID
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    metadata: dict[str, Any] | None
    errors: list[dict[str, Any]] | None
    callback_url: str | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    reserved_credits: int
    charged_credits: int
    idempotency_key: str | None
    request_hash: bytes | None
    lease_until: datetime | None
    sent_at: datetime | None
    created_at: datetime
    expires_at: datetime
    in_progress_at: datetime | None
    finalizing_at: datetime | None
    completed_at: datetime | None
    failed_at: datetime | None
    expired_at: datetime | None
    cancelling_at: datetime | None
    cancelled_at: datetime | None


_COLUMNS = ", ".join(BatchRow.__struct_fields__)
_batch_row = kwargs_row(BatchRow)


# --- What clients see -------------------------------------------------------------------------------------------


class RequestCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Lines of the batch, and lines that ended (cancelled and expired lines count as failed)."""

    total: int
    completed: int
    failed: int


class BatchError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One reason a batch failed validation."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


class BatchErrors(msgspec.Struct, frozen=True, kw_only=True):
    """A failed batch's errors (OpenAI's shape)."""

    data: list[BatchError]
    object: str = "list"


class BatchObject(msgspec.Struct, frozen=True, kw_only=True):
    """A batch as OpenAI's API shows it (timestamps in Unix seconds), plus `callback_url`."""

    id: str
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, Any] | None
    callback_url: str | None = None
    object: str = "batch"


class BatchList(OpenAIList[BatchObject], frozen=True, kw_only=True):
    """A page of batches, newest first; pass `last_id` as `after` for the next page."""


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def view(row: BatchRow, counts: RequestCounts | None = None) -> BatchObject:
    """The client view of a batch; `counts` are the live ones (default: those stored at the end)."""
    counts = counts or RequestCounts(total=row.total, completed=row.completed, failed=row.failed)
    errors = BatchErrors(data=[msgspec.convert(e, BatchError) for e in row.errors]) if row.errors else None
    return BatchObject(
        id=row.id, endpoint=row.endpoint, errors=errors, input_file_id=row.input_file_id,
        completion_window=row.completion_window, status=row.status, output_file_id=row.output_file_id,
        error_file_id=row.error_file_id, created_at=int(row.created_at.timestamp()),
        in_progress_at=_unix(row.in_progress_at), expires_at=_unix(row.expires_at),
        finalizing_at=_unix(row.finalizing_at), completed_at=_unix(row.completed_at),
        failed_at=_unix(row.failed_at), expired_at=_unix(row.expired_at), cancelling_at=_unix(row.cancelling_at),
        cancelled_at=_unix(row.cancelled_at), request_counts=counts, metadata=row.metadata,
        callback_url=row.callback_url,
    )


# --- Endpoints: how a line's body becomes a job, and its result an output line ----------------------------------

CustomId = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


@dataclass(frozen=True)
class _Endpoint:
    """What a batch line of one endpoint is."""

    mode: Mode
    decoder: msgspec.json.Decoder[Any]
    to_job: Callable[[Any], ChatCompletionJob | EmbeddingJob]
    cost: Callable[[Any, Route], int]
    chars: Callable[[Any], int]
    #: The `response.body` of a succeeded line: (job id, finished at, line metadata, result) -> body.
    body: Callable[[UUID, int, dict[str, Any], dict[str, Any]], dict[str, Any]]


def _line_type(body: type) -> Any:
    return msgspec.defstruct("BatchLine", [("custom_id", CustomId), ("method", str), ("url", str), ("body", body)],
                             kw_only=True)


def _chat_body(job_id: UUID, created: int, line: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return completion_body(job_id, created, line["model"], result)


def _embedding_body(job_id: UUID, created: int, line: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    fmt = (line.get("metadata") or {}).get("encoding_format", "float")
    return embedding_body(result, "base64" if fmt == "base64" else "float", line["model"])


def _embedding_line_job(req: EmbeddingRequest) -> EmbeddingJob:
    job = embedding_job(req, bulk=True)
    # The stored input has no encoding: keep the line's for its output (`_embedding_body`).
    return msgspec.structs.replace(job, metadata={"encoding_format": req.encoding_format}) \
        if req.encoding_format != "float" else job


ENDPOINTS: dict[str, _Endpoint] = {
    "/v1/chat/completions": _Endpoint(
        mode="chat", decoder=msgspec.json.Decoder(_line_type(ChatCompletionRequest)),
        to_job=lambda body: chat_job(body, bulk=True), cost=credits.worst_case,
        chars=lambda input: sum(len(m.content) for m in input.messages), body=_chat_body),
    "/v1/embeddings": _Endpoint(
        mode="embedding", decoder=msgspec.json.Decoder(_line_type(EmbeddingRequest)),
        to_job=_embedding_line_job, cost=credits.worst_case_embedding,
        chars=lambda input: sum(len(t) for t in input.texts), body=_embedding_body),
}


def window_seconds(window: str) -> int:
    """`24h`, `90m`, `30s` as seconds.

    Raises:
        InvalidBatch: not such a duration, or longer than 7 days.
    """
    match = re.fullmatch(r"([1-9][0-9]{0,6})([smh])", window)
    if match is None:
        raise InvalidBatch(f"completion_window {window!r} is not a duration such as `24h`", param="completion_window")
    seconds = int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]
    if seconds > MAX_WINDOW_SECONDS:
        raise InvalidBatch("completion_window is at most 168h", param="completion_window")
    return seconds


# --- Validation (CPU work, run in a thread) ---------------------------------------------------------------------


def _copy_text(value: str) -> str:
    """A value escaped for COPY's text format."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


_encode = msgspec.json.Encoder().encode
#: A JSON `\u0000` escape (not an escaped backslash followed by `u0000`).
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


@dataclass
class Validation:
    """Everything known about a batch's lines after reading its input file."""

    endpoint: _Endpoint
    catalog: Catalog
    batch_id: str
    owner_id: UUID
    max_lines: int
    max_chars: int
    max_attempts: int
    lines: int = 0
    cost: int = 0
    errors: list[BatchError] = field(default_factory=list)
    error_count: int = 0
    #: The COPY text of the line jobs (only while no error was found), and their (id, queue, message).
    copy: list[str] = field(default_factory=list)
    jobs: list[tuple[str, str, bytes]] = field(default_factory=list)
    #: The longest line read (bytes); a longer one is refused without being held whole.
    max_line_bytes: int = 4 * 1024 * 1024
    _line_no: int = 0
    _rest: list[bytes] = field(default_factory=list)
    _rest_bytes: int = 0
    _seen: set[str] = field(default_factory=set)
    _routes: dict[str, Route | UnknownModel] = field(default_factory=dict)

    def feed(self, chunk: bytes) -> None:
        """Validate the complete lines of `chunk` (the last, partial line waits for the next chunk)."""
        if self._line_no == 0 and not self._rest and chunk.startswith(b"\xef\xbb\xbf"):
            chunk = chunk[3:]  # a UTF-8 byte order mark
        lines = chunk.split(b"\n")
        tail = lines.pop()
        for raw in lines:
            self._line(self._take_rest(raw) if self._rest_bytes else raw)
        if tail:
            # A partial line: kept in pieces (no re-copy per chunk), and only up to the limit.
            self._rest_bytes += len(tail)
            if self._rest_bytes <= self.max_line_bytes:
                self._rest.append(tail)
            else:
                self._rest = []  # too long: its bytes are dropped, `_rest_bytes` remembers it

    def _take_rest(self, end: bytes) -> bytes | None:
        """The partial line kept so far, completed by `end`; None when it is too long."""
        too_long = self._rest_bytes + len(end) > self.max_line_bytes
        raw = None if too_long else b"".join([*self._rest, end])
        self._rest, self._rest_bytes = [], 0
        return raw

    def finish(self) -> None:
        """Validate the last line, and fail an empty file."""
        if self._rest_bytes:
            self._line(self._take_rest(b""))
        if self.lines == 0 and not self.error_count:
            self._error("empty_file", "the input file has no requests", None)

    def _error(self, code: str, message: str, line: int | None, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(BatchError(code=code, message=message, line=line, param=param))
        self.copy.clear()
        self.jobs.clear()

    def _route(self, model: str) -> Route | UnknownModel:
        if model not in self._routes:
            try:
                self._routes[model] = self.catalog.resolve(model, self.endpoint.mode)
            except UnknownModel as exc:
                self._routes[model] = exc
        return self._routes[model]

    def _line(self, raw: bytes | None) -> None:
        self._line_no += 1
        n = self._line_no
        if raw is not None and not raw.strip():
            return
        self.lines += 1
        if raw is None or len(raw) > self.max_line_bytes:
            self._error("line_too_long", f"line {n} is longer than {self.max_line_bytes} bytes", n)
            return
        if b"\\u0000" in raw and _NUL.search(raw):
            # PostgreSQL text and jsonb cannot hold NUL: refuse it here rather than fail the COPY.
            self._error("invalid_request", f"line {n} contains a NUL character (\\u0000)", n)
            return
        if self.lines > self.max_lines:
            if self.lines == self.max_lines + 1:
                self._error("too_many_lines", f"a batch has at most {self.max_lines} requests", n)
            return
        try:
            line = self.endpoint.decoder.decode(raw)
        except msgspec.ValidationError as exc:
            path = re.search(r"at `\$\.?([^`]*)`", str(exc))
            self._error("invalid_request", f"line {n}: {exc}", n, path[1] if path else None)
            return
        except msgspec.DecodeError as exc:
            self._error("invalid_json_line", f"line {n} is not valid JSON: {exc}", n)
            return
        if line.custom_id in self._seen:
            self._error("duplicate_custom_id", f"custom_id {line.custom_id!r} appears more than once", n,
                        "custom_id")
            return
        self._seen.add(line.custom_id)
        if line.method != "POST":
            self._error("invalid_method", f"method must be POST, not {line.method!r}", n, "method")
            return
        if line.url != self._url:
            self._error("mismatched_url", f"url {line.url!r} differs from the batch's endpoint {self._url}", n,
                        "url")
            return
        job = self.endpoint.to_job(line.body)
        route = self._route(job.input.model)
        if isinstance(route, UnknownModel):
            self._error("model_not_found", f"line {n}: {route.message}", n, "body.model")
            return
        if self.endpoint.chars(job.input) > self.max_chars:
            self._error("prompt_too_large", f"line {n}: the input is longer than {self.max_chars} characters", n,
                        "body")
            return
        cost = self.endpoint.cost(job.input, route)
        self.cost += cost
        if self.error_count:
            return  # the batch fails anyway: only look for more errors
        job_id = str(uuid7())
        metadata = _encode(job.metadata).decode() if job.metadata else "\\N"
        self.copy.append("\t".join((
            job_id, str(self.owner_id), str(job.__struct_config__.tag), str(job.queue),
            _copy_text(_encode(job.input).decode()), _copy_text(metadata) if job.metadata else metadata,
            str(self.max_attempts), str(cost), self.batch_id, _copy_text(line.custom_id),
        )) + "\n")
        # The message is built here, in the validation thread, not in the API's event loop.
        self.jobs.append((job_id, str(job.queue), job_message(job_id, str(job.queue))))

    @property
    def _url(self) -> str:
        return next(path for path, e in ENDPOINTS.items() if e is self.endpoint)


# --- Store ------------------------------------------------------------------------------------------------------


async def get(pool: AsyncConnectionPool, batch_id: str, owner_id: UUID | None) -> BatchRow | None:
    """A batch, if `owner_id` owns it (None: anyone's)."""
    async with pool.connection() as conn, conn.cursor(row_factory=_batch_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM batches WHERE id = %s AND (%s::uuid IS NULL OR owner_id = %s)",
                          (batch_id, owner_id, owner_id))
        return await cur.fetchone()


async def counts(pool: AsyncConnectionPool, row: BatchRow) -> RequestCounts:
    """The live counts of a batch, from its lines (a terminal batch's are stored)."""
    if row.status in TERMINAL or row.status == "validating":
        return RequestCounts(total=row.total, completed=row.completed, failed=row.failed)
    done, failed, _live = await _line_counts(pool, row.id)
    return RequestCounts(total=row.total, completed=done, failed=failed)


async def _line_counts(pool: AsyncConnectionPool, batch_id: str) -> tuple[int, int, int]:
    """(succeeded, failed or cancelled, queued or running) lines of a batch."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            SELECT count(*) FILTER (WHERE status = 'succeeded'),
                   count(*) FILTER (WHERE status IN ('failed', 'cancelled')),
                   count(*) FILTER (WHERE status IN ('queued', 'running'))
            FROM jobs WHERE batch_id = %s
            """,
            (batch_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


async def present(pool: AsyncConnectionPool, row: BatchRow) -> BatchObject:
    """A batch as its owner sees it now."""
    return view(row, await counts(pool, row))


async def list_batches(pool: AsyncConnectionPool, owner_id: UUID, after: str | None, limit: int) -> BatchList:
    """The owner's batches, newest first, those created before the batch `after`."""
    async with pool.connection() as conn, conn.cursor(row_factory=_batch_row) as cur:
        await cur.execute(
            f"""
            SELECT {_COLUMNS} FROM batches
            WHERE owner_id = %s AND (%s::text IS NULL OR id < %s)
            ORDER BY id DESC LIMIT %s
            """,
            (owner_id, after, after, limit + 1),
        )
        rows = await cur.fetchall()
    return openai_page(BatchList, [await present(pool, row) for row in rows[:limit]], len(rows) > limit)


# --- Create and fan out -----------------------------------------------------------------------------------------


async def create(clients: Clients, catalog: Catalog, owner_id: UUID, req: CreateBatch, *,
                 idempotency_key: str | None = None, fingerprint: bytes | None = None) -> BatchRow:
    """Create a batch: validate every line, reserve, fan out. Returns the batch (`in_progress` or `failed`).

    Raises:
        FileNotFound: no such input file for this owner.
        InvalidBatch: the file is not a `batch` file, or the window is invalid.
        InsufficientCredits: the lines may cost more than the balance (the batch is recorded `failed`).
        IdempotencyConflict: the key was used with another request.
    """
    seconds = window_seconds(req.completion_window)
    input_file = await files.get_file(clients.pool, req.input_file_id, owner_id)
    if input_file is None:
        raise FileNotFound(f"no file {req.input_file_id!r}", param="input_file_id")
    if input_file.purpose != "batch":
        raise InvalidBatch(f"file {input_file.id} has purpose {input_file.purpose!r}; upload it with purpose "
                           "`batch`", param="input_file_id")
    async with clients.pool.connection() as conn, conn.cursor(row_factory=_batch_row) as cur:
        await cur.execute(
            f"""
            INSERT INTO batches (id, owner_id, endpoint, input_file_id, completion_window, metadata, callback_url,
                                 idempotency_key, request_hash, expires_at, lease_until)
            VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, now() + make_interval(secs => %s),
                    now() + make_interval(secs => %s))
            ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING {_COLUMNS}
            """,
            ("batch_" + uuid7().hex, owner_id, req.endpoint, req.input_file_id, req.completion_window,
             _encode(req.metadata).decode() if req.metadata is not None else None, req.callback_url,
             idempotency_key, fingerprint, seconds, VALIDATION_LEASE_SECONDS),
        )
        row = await cur.fetchone()
        if row is None:
            await cur.execute(f"SELECT {_COLUMNS} FROM batches WHERE owner_id = %s AND idempotency_key = %s",
                              (owner_id, idempotency_key))
            found = await cur.fetchone()
            assert found is not None
            if found.request_hash != fingerprint:
                raise IdempotencyConflict("this Idempotency-Key was already used with a different request body")
            return found
    logger.bind(batch_id=row.id).info("batch created from {} ({} bytes)", input_file.id, input_file.bytes)
    return await fan_out(clients, catalog, row)


async def fan_out(clients: Clients, catalog: Catalog, batch: BatchRow) -> BatchRow:
    """Validate a `validating` batch's file and, if every line is good, reserve and enqueue its lines.

    Safe to run again on the same batch (a resumed fan-out): only one run's transaction can move the
    batch out of `validating`.
    """
    settings = clients.settings
    check = Validation(endpoint=ENDPOINTS[batch.endpoint], catalog=catalog, batch_id=batch.id,
                       owner_id=batch.owner_id, max_lines=settings.max_batch_lines,
                       max_chars=settings.max_prompt_chars, max_attempts=settings.max_attempts)
    began = time.perf_counter()
    input_file = await files.get_file(clients.pool, batch.input_file_id, batch.owner_id)
    try:
        if input_file is None:
            raise FileNotFound(f"the input file {batch.input_file_id} was deleted")
        async for chunk in await files.read_file(clients, input_file):
            await anyio.to_thread.run_sync(check.feed, chunk)
        await anyio.to_thread.run_sync(check.finish)
    except FileNotFound as exc:
        check._error("file_not_found", exc.message, None, "input_file_id")
    if check.error_count:
        return await _fail(clients, batch, check.errors, check.lines)
    validated = time.perf_counter()
    try:
        async with clients.pool.connection() as conn, conn.transaction():
            async with conn.cursor(row_factory=_batch_row) as cur:
                await cur.execute(
                    f"""
                    UPDATE batches SET status = 'in_progress', in_progress_at = now(), total = %s,
                                       reserved_credits = %s, lease_until = now() + make_interval(secs => %s)
                    WHERE id = %s AND status = 'validating'
                    RETURNING {_COLUMNS}
                    """,
                    (check.lines, check.cost, SEND_LEASE_SECONDS, batch.id),
                )
                started = await cur.fetchone()
            if started is None:  # cancelled meanwhile, or another process fanned it out
                return await get(clients.pool, batch.id, None) or batch
            if check.cost and await credits.balance_of(conn, batch.owner_id) < check.cost:
                await credits.reserve_batch(conn, batch.owner_id, batch.id, check.cost)  # raises, nothing copied
            async with conn.cursor() as copy_cur, copy_cur.copy(
                "COPY jobs (id, owner_id, kind, queue, input, metadata, max_attempts, reserved_credits, batch_id,"
                " custom_id) FROM STDIN"
            ) as copy:
                for start in range(0, len(check.copy), 2000):
                    await copy.write("".join(check.copy[start:start + 2000]))
            # Last, so the account's row lock (every job of this user needs it) is held only for the commit.
            if check.cost:
                await credits.reserve_batch(conn, batch.owner_id, batch.id, check.cost)
    except InsufficientCredits as exc:
        await _fail(clients, batch, [BatchError(code=exc.code, message=exc.message)], check.lines)
        raise
    committed = time.perf_counter()
    metrics.CREDITS.labels(operation="reserved").inc(check.cost)
    try:
        await send_jobs(clients.redis, check.jobs, wakeup=settings.dispatch_wakeup,
                        chunk=settings.batch_send_chunk)
    except Exception:
        # The lines are committed and paid for: the maintenance loop sends what is missing once the
        # lease runs out (`sent_at` is still NULL). The batch stands, as a 202 does.
        logger.opt(exception=True).bind(batch_id=batch.id).warning("fan-out send failed; maintenance will resume")
        return started
    sent = time.perf_counter()
    logger.bind(batch_id=batch.id).info(
        "batch fanned out: {} lines, {} credits reserved (validated in {:.3f} s, reserved + copied in {:.3f} s, "
        "sent in {:.3f} s)", check.lines, check.cost, validated - began, committed - validated, sent - committed)
    return await _mark_sent(clients.pool, batch.id) or started


async def _mark_sent(pool: AsyncConnectionPool, batch_id: str) -> BatchRow | None:
    async with pool.connection() as conn, conn.cursor(row_factory=_batch_row) as cur:
        await cur.execute(
            f"""
            UPDATE batches SET sent_at = now(),
                               lease_until = CASE WHEN status = 'in_progress' THEN NULL ELSE lease_until END
            WHERE id = %s RETURNING {_COLUMNS}
            """,
            (batch_id,))
        return await cur.fetchone()


async def _fail(clients: Clients, batch: BatchRow, errors: list[BatchError], lines: int) -> BatchRow:
    """Fail a batch that never started: nothing was reserved, no line exists."""
    async with clients.pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=_batch_row) as cur:
        await cur.execute(
            f"""
            UPDATE batches SET status = 'failed', failed_at = now(), errors = %s::jsonb, total = %s,
                               lease_until = NULL
            WHERE id = %s AND status = 'validating'
            RETURNING {_COLUMNS}
            """,
            (_encode(errors).decode(), lines, batch.id),
        )
        row = await cur.fetchone()
        if row is None:
            return await get(clients.pool, batch.id, None) or batch
        callback = await _insert_callback(clients, conn, row)
    await send_after_commit(clients, callback)
    logger.bind(batch_id=batch.id).warning("batch failed validation: {} errors, first: {}", len(errors),
                                           errors[0].message if errors else "")
    await _publish(clients, row, view(row))
    return row


# --- Cancel and expire ------------------------------------------------------------------------------------------


async def cancel(clients: Clients, batch_id: str, owner_id: UUID | None) -> BatchRow:
    """Start cancelling a batch: its lines are cancelled now; the maintenance loop finalizes it.

    Raises:
        BatchNotFound: no such batch for this owner.
        BatchFinished: the batch already ended.
    """
    async with clients.pool.connection() as conn, conn.cursor(row_factory=_batch_row) as cur:
        await cur.execute(
            f"""
            UPDATE batches SET status = 'cancelling', cancelling_at = now(), lease_until = NULL
            WHERE id = %s AND (%s::uuid IS NULL OR owner_id = %s) AND status IN ('validating', 'in_progress')
            RETURNING {_COLUMNS}
            """,
            (batch_id, owner_id, owner_id),
        )
        row = await cur.fetchone()
    if row is None:
        current = await get(clients.pool, batch_id, owner_id)
        if current is None:
            raise BatchNotFound(f"no batch {batch_id!r}")
        if current.status == "cancelling":
            return current
        raise BatchFinished(f"batch {batch_id} is already {current.status}", batch_status=current.status)
    await end_lines(clients, row.id, "batch_cancelled", "the batch was cancelled", running=True)
    logger.bind(batch_id=row.id).info("batch cancelling")
    return row


async def end_lines(clients: Clients, batch_id: str, code: str, message: str, *, running: bool) -> int:
    """Cancel a batch's lines that have not started (and with `running`, those running); returns how many.

    One UPDATE for all of them. Lines hold no reservation of their own (the batch's is released when it is
    finalized), so there is nothing to settle per line. Workers running a cancelled line stop it; the
    messages of lines that never started are withdrawn from Redis.
    """
    statuses = ["queued", "running"] if running else ["queued"]
    error = _encode({"code": code, "message": message}).decode()
    async with clients.pool.connection() as conn:
        cur = await conn.execute(
            """
            WITH ended AS (
                SELECT id, status FROM jobs WHERE batch_id = %s AND status = ANY(%s) FOR UPDATE SKIP LOCKED)
            UPDATE jobs j SET status = 'cancelled', finished_at = now(), lease_until = NULL, error = %s::jsonb
            FROM ended WHERE j.id = ended.id
            RETURNING j.id, j.queue, ended.status
            """,
            (batch_id, statuses, error),
        )
        ended = await cur.fetchall()
    # Queued lines' messages are withdrawn, so the bulk pool never fetches them (a running one's is in flight).
    await withdraw(clients.redis, [(str(job_id), queue) for job_id, queue, status in ended if status == "queued"])
    was_running = [str(job_id) for job_id, _queue, status in ended if status == "running"]
    if was_running:
        async with clients.redis.pipeline(transaction=False) as pipe:
            for job_id in was_running:
                pipe.publish(CANCEL_CHANNEL, job_id)
            await pipe.execute()
    return len(ended)


# --- Maintenance: progress, expiry, resumption, finalization ----------------------------------------------------


class Tracker:
    """The maintenance loop's view of live batches: what it last reported for each."""

    def __init__(self, clients: Clients, catalog: Catalog) -> None:
        self.clients = clients
        self.catalog = catalog
        self.reported: dict[str, tuple[str, int, int]] = {}
        #: When each batch's counts last moved (monotonic seconds), to notice a stalled one.
        self.moved: dict[str, float] = {}

    async def tick(self) -> int:
        """One pass over every live batch; returns how many batches ended."""
        pool = self.clients.pool
        async with pool.connection() as conn, conn.cursor(row_factory=_batch_row) as cur:
            await cur.execute(f"SELECT {_COLUMNS} FROM batches WHERE status = ANY(%s) ORDER BY id", (list(LIVE),))
            live = await cur.fetchall()
        ended = 0
        now = await _now(pool) if live else None
        for batch in live:
            assert now is not None
            try:
                ended += await self._step(batch, now)
            except InsufficientCredits:
                ended += 1  # a resumed fan-out the balance no longer covers: recorded `failed`
            except Exception:
                # One batch's trouble (storage, a bug) must not hold up the others; it is retried next tick.
                logger.opt(exception=True).bind(batch_id=batch.id).error("batch step failed")
        for gone in set(self.reported) - {b.id for b in live}:
            del self.reported[gone]
            self.moved.pop(gone, None)
        return ended

    async def _step(self, batch: BatchRow, now: datetime) -> int:
        leased = batch.lease_until is not None and batch.lease_until > now
        if batch.status == "validating":
            if leased:
                return 0
            if not await _claim(self.clients.pool, batch.id, "validating", VALIDATION_LEASE_SECONDS):
                return 0
            logger.bind(batch_id=batch.id).warning("resuming the validation of a batch whose fan-out stopped")
            row = await fan_out(self.clients, self.catalog, batch)
            return int(row.status in TERMINAL)
        if batch.status == "in_progress" and batch.sent_at is None and not leased:
            await self._resend(batch)
        if batch.status == "in_progress" and batch.expires_at <= now:
            if batch.expired_at is None:
                await _stamp_expired(self.clients.pool, batch.id)
                logger.bind(batch_id=batch.id).warning("batch expired: cancelling the lines that did not run")
            await end_lines(self.clients, batch.id, "batch_expired",
                            "the batch expired before this request ran", running=False)
        elif batch.status == "cancelling":
            await end_lines(self.clients, batch.id, "batch_cancelled", "the batch was cancelled", running=True)
        done, failed, live = await _line_counts(self.clients.pool, batch.id)
        if (batch.status, done, failed) != self.reported.get(batch.id):
            self.reported[batch.id] = (batch.status, done, failed)
            self.moved[batch.id] = time.monotonic()
            await _publish(self.clients, batch, view(batch, RequestCounts(total=batch.total, completed=done,
                                                                          failed=failed)))
        if live and batch.status == "in_progress" and batch.sent_at is not None:
            await self._unstick(batch)
        if live or (batch.status == "finalizing" and leased):
            return 0
        return int(await finalize(self.clients, batch.id) is not None)

    async def _unstick(self, batch: BatchRow) -> None:
        """Send again the queued lines of a batch that stopped moving while its lane is empty.

        A consumer that loses its Redis connection drops the messages it had
        prefetched; their bodies stay in Redis but nothing will fetch them
        while that worker lives. If a batch has not moved for a while and its
        lane has nothing waiting, its queued lines are sent again (a line that
        was only slow runs once anyway: its claim makes the copy a no-op).
        """
        still = time.monotonic() - self.moved.get(batch.id, time.monotonic())
        if still < 3 * self.clients.settings.reconcile_after_seconds:
            return
        lane, redis = str(BULK_LANE), self.clients.redis
        async with redis.pipeline(transaction=False) as pipe:
            pipe.llen(f"{NAMESPACE}:{lane}")
            pipe.hlen(f"{NAMESPACE}:{lane}.DQ.msgs")
            waiting, delayed = await pipe.execute()
        if waiting or delayed:
            return
        async with self.clients.pool.connection() as conn:
            cur = await conn.execute("SELECT id, queue FROM jobs WHERE batch_id = %s AND status = 'queued'",
                                     (batch.id,))
            queued = [(str(job_id), queue) for job_id, queue in await cur.fetchall()]
        held = await held_dead(redis, queued, namespace=NAMESPACE)  # dead letters wait for an operator
        queued = [job for job in queued if job[0] not in held]
        if queued:
            await send_jobs(redis, queued, wakeup=self.clients.settings.dispatch_wakeup)
            logger.bind(batch_id=batch.id).warning("batch stalled with its lane empty: re-sent {} queued lines",
                                                   len(queued))
        self.moved[batch.id] = time.monotonic()

    async def _resend(self, batch: BatchRow) -> None:
        """Send the queued lines whose message is not in Redis (a fan-out that stopped before sending)."""
        if not await _claim(self.clients.pool, batch.id, "in_progress", VALIDATION_LEASE_SECONDS):
            return
        async with self.clients.pool.connection() as conn:
            cur = await conn.execute("SELECT id, queue FROM jobs WHERE batch_id = %s AND status = 'queued'",
                                     (batch.id,))
            queued = [(str(job_id), queue) for job_id, queue in await cur.fetchall()]
        lost: list[tuple[str, str]] = []
        for start in range(0, len(queued), 5000):
            lost += await unsent(self.clients.redis, queued[start:start + 5000])
        await send_jobs(self.clients.redis, lost, wakeup=self.clients.settings.dispatch_wakeup)
        await _mark_sent(self.clients.pool, batch.id)
        logger.bind(batch_id=batch.id).warning("resumed a batch's fan-out: sent {} of {} queued lines", len(lost),
                                               len(queued))


async def _now(pool: AsyncConnectionPool) -> datetime:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT now()")).fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


async def _claim(pool: AsyncConnectionPool, batch_id: str, status: str, seconds: int) -> bool:
    """Take a batch's lease (its current holder's expired) to resume a step."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            UPDATE batches SET lease_until = now() + make_interval(secs => %s)
            WHERE id = %s AND status = %s AND (lease_until IS NULL OR lease_until < now())
            """,
            (seconds, batch_id, status),
        )
        return cur.rowcount == 1


async def _stamp_expired(pool: AsyncConnectionPool, batch_id: str) -> None:
    async with pool.connection() as conn:
        await conn.execute("UPDATE batches SET expired_at = now() WHERE id = %s AND expired_at IS NULL "
                           "AND status = 'in_progress'", (batch_id,))


def _line_id(job_id: UUID) -> str:
    return f"batch_req_{job_id.hex}"


async def _output_lines(pool: AsyncConnectionPool, batch: BatchRow, succeeded: bool) -> AsyncIterator[bytes]:
    """The output (succeeded lines) or error file (every other line) of a batch, in OpenAI's line format."""
    endpoint = ENDPOINTS[batch.endpoint]
    condition = "status = 'succeeded'" if succeeded else "status <> 'succeeded'"
    async with pool.connection() as conn, conn.transaction(), \
            conn.cursor(name=f"out_{batch.id}_{int(succeeded)}") as cur:
            await cur.execute(
                f"""
                SELECT id, custom_id, input, metadata, result, error, finished_at FROM jobs
                WHERE batch_id = %s AND {condition} ORDER BY id
                """,
                (batch.id,),
            )
            buffer: list[bytes] = []
            async for job_id, custom_id, input, metadata, result, error, finished_at in cur:
                request_id = f"req_{job_id.hex}"
                if succeeded:
                    line_input = {**input, "metadata": metadata}
                    body = endpoint.body(job_id, int(finished_at.timestamp()), line_input, result)
                    entry = {"id": _line_id(job_id), "custom_id": custom_id, "error": None,
                             "response": {"status_code": 200, "request_id": request_id, "body": body}}
                else:
                    error = error or {"code": "unknown", "message": "the request did not succeed"}
                    entry = {"id": _line_id(job_id), "custom_id": custom_id, "response": None,
                             "error": {"code": error.get("code"), "message": error.get("message")}}
                buffer.append(_encode(entry) + b"\n")
                if len(buffer) >= 1000:
                    yield b"".join(buffer)
                    buffer.clear()
            if buffer:
                yield b"".join(buffer)


async def finalize(clients: Clients, batch_id: str) -> BatchRow | None:
    """End a batch none of whose lines is live: files, counts, release, callback. None if not ours to do."""
    async with clients.pool.connection() as conn, conn.cursor(row_factory=_batch_row) as cur:
        await cur.execute(
            f"""
            UPDATE batches
            SET status = CASE WHEN status = 'in_progress' THEN 'finalizing' ELSE status END,
                finalizing_at = CASE WHEN status = 'in_progress' THEN now() ELSE finalizing_at END,
                lease_until = now() + make_interval(secs => %s)
            WHERE id = %s AND status IN ('in_progress', 'finalizing', 'cancelling')
              AND (lease_until IS NULL OR lease_until < now())
              AND NOT EXISTS (SELECT 1 FROM jobs WHERE batch_id = %s AND status IN ('queued', 'running'))
            RETURNING {_COLUMNS}
            """,
            (FINALIZE_LEASE_SECONDS, batch_id, batch_id),
        )
        batch = await cur.fetchone()
    if batch is None:
        return None
    done, failed, _ = await _line_counts(clients.pool, batch.id)
    names = (f"{batch.id}_output.jsonl", f"{batch.id}_error.jsonl")
    await _drop_files(clients, batch, names)  # what a finalize that died half-way wrote
    output_id = error_id = None
    if done:
        output = await files.store_file(clients, batch.owner_id, names[0], "batch_output",
                                        _output_lines(clients.pool, batch, succeeded=True))
        output_id = output.id
    if failed:
        errors = await files.store_file(clients, batch.owner_id, names[1], "batch_output",
                                        _output_lines(clients.pool, batch, succeeded=False))
        error_id = errors.id
    final = "cancelled" if batch.status == "cancelling" else "expired" if batch.expired_at else "completed"
    async with clients.pool.connection() as conn, conn.transaction():
        async with conn.cursor(row_factory=_batch_row) as cur:
            await cur.execute(
                f"""
                UPDATE batches
                SET status = %(final)s, output_file_id = %(out)s, error_file_id = %(err)s, completed = %(done)s,
                    failed = %(failed)s, lease_until = NULL,
                    charged_credits = (SELECT coalesce(sum(charged_credits), 0) FROM jobs WHERE batch_id = %(id)s),
                    completed_at = CASE WHEN %(final)s = 'completed' THEN now() END,
                    cancelled_at = CASE WHEN %(final)s = 'cancelled' THEN now() END
                WHERE id = %(id)s AND status IN ('finalizing', 'cancelling')
                RETURNING {_COLUMNS}
                """,
                {"final": final, "out": output_id, "err": error_id, "done": done, "failed": failed, "id": batch.id},
            )
            row = await cur.fetchone()
        if row is None:
            return None
        if row.reserved_credits:
            await credits.release_batch(conn, row.owner_id, row.id, row.reserved_credits - row.charged_credits)
        callback = await _insert_callback(clients, conn, row)
    await send_after_commit(clients, callback)
    metrics.CREDITS.labels(operation="released").inc(max(0, row.reserved_credits - row.charged_credits))
    logger.bind(batch_id=row.id).info("batch {}: {} succeeded, {} failed, {} of {} reserved credits charged",
                                      final, done, failed, row.charged_credits, row.reserved_credits)
    await _publish(clients, row, view(row))
    return row


async def _drop_files(clients: Clients, batch: BatchRow, names: tuple[str, ...]) -> None:
    """Delete output files of this batch no batch row points to (left by an interrupted finalize)."""
    async with clients.pool.connection() as conn:
        cur = await conn.execute(
            """
            SELECT f.id FROM files f
            WHERE f.owner_id = %s AND f.purpose = 'batch_output' AND f.filename = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.output_file_id = f.id OR b.error_file_id = f.id)
            """,
            (batch.owner_id, list(names)),
        )
        stale = [row[0] for row in await cur.fetchall()]
    for file_id in stale:
        await files.delete_file(clients, file_id, batch.owner_id)


async def _publish(clients: Clients, batch: BatchRow, shown: BatchObject) -> None:
    """A `batch.progress` event on the owner's channel (and the batch's own replay stream)."""
    await clients.events.publish(batch.id, batch.owner_id, EventType.BATCH_PROGRESS, {
        "status": shown.status, "request_counts": msgspec.to_builtins(shown.request_counts)})


async def _insert_callback(clients: Clients, conn: AsyncConnection[Any], batch: BatchRow) -> Any:
    """The batch's `webhook.deliver` job, in its ending transaction; None without a `callback_url`."""
    if not batch.callback_url:
        return None
    hook = WebhookJob(input=WebhookInput(
        url=batch.callback_url, webhook_id=f"msg_{batch.id}", type=f"batch.{batch.status}", subject=batch.id,
        data=msgspec.to_builtins(view(batch))))
    return await insert_job_of(conn, hook, owner_id=batch.owner_id, job_id=uuid7(),
                               idempotency_key=f"callback:{batch.id}", max_attempts=clients.settings.max_attempts)

