"""Files (OpenAI's Files API): a row in `files` per file, its bytes in the configured `FileStorage`.

Storing a file is two steps. `stage_file` streams the bytes into storage
while hashing and counting them, refusing a file over `max_file_bytes` (or
over the quota as it stood when the upload began) before it is whole;
`commit_file` then INSERTs the row under a per-user advisory lock that makes
the quota check exact even when one user uploads in parallel. Anything refused
is deleted from storage again, so a refused upload leaves nothing behind.
`store_file` does both; the upload route uses the two steps because a
multipart form may send `purpose` after the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import anyio
import msgspec
from loguru import logger
from psycopg import AsyncConnection
from psycopg.rows import kwargs_row
from psycopg_pool import AsyncConnectionPool

from jobs.clients import Clients
from jobs.errors import FileNotFound, FileQuotaExceeded, FileTooLarge, InvalidUpload
from jobs.ids import uuid7
from jobs.openai_format import OpenAIList, openai_page

#: Purposes a client may upload with.
UPLOAD_PURPOSES = ("batch", "assistants", "user_data")
#: Every purpose: `batch_output` files (a batch's output and error files) are only created by the platform.
PURPOSES = (*UPLOAD_PURPOSES, "batch_output")
#: Namespace of the per-user advisory lock that serialises quota checks (`pg_advisory_xact_lock(ns, key)`).
_QUOTA_LOCK = 7243002


class FileRow(msgspec.Struct, kw_only=True):
    """A row of the `files` table."""

    id: str
    owner_id: UUID
    filename: str
    purpose: str
    bytes: int
    sha256: str
    storage_key: str
    status: str
    status_details: str | None
    created_at: datetime
    #: The `file.process` job whose outcome `status` shows (files for search only).
    process_job_id: UUID | None = None
    #: What processing found (`jobs.knowledge.ProcessedSummary`), once processed.
    processed: dict[str, Any] | None = None


class FileView(msgspec.Struct, frozen=True, kw_only=True):
    """A file as OpenAI's API shows it (plus `sha256`, which the `openai` SDK passes through)."""

    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None
    sha256: str
    object: str = "file"
    #: Files for search: the `file.process` job (follow it on `/v1/jobs/{id}/events`) and what it found.
    process_job_id: str | None = None
    processed: dict[str, Any] | None = None

    @classmethod
    def of(cls, row: FileRow) -> FileView:
        """The view of a file row."""
        return cls(id=row.id, bytes=row.bytes, created_at=int(row.created_at.timestamp()), filename=row.filename,
                   purpose=row.purpose, status=row.status, status_details=row.status_details, sha256=row.sha256,
                   process_job_id=str(row.process_job_id) if row.process_job_id else None, processed=row.processed)


class FileList(OpenAIList[FileView], frozen=True, kw_only=True):
    """A page of files in OpenAI's list shape; pass `last_id` as `after` for the next page."""

    @classmethod
    def of(cls, rows: list[FileRow], limit: int) -> FileList:
        """The page of `limit` files out of `limit + 1` fetched rows."""
        return openai_page(cls, [FileView.of(r) for r in rows[:limit]], len(rows) > limit)


class DeletedFile(msgspec.Struct, frozen=True, kw_only=True):
    """What deleting a file answers (OpenAI's shape)."""

    id: str
    deleted: bool = True
    object: str = "file"


class StagedFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file whose bytes are stored but whose row is not written yet (`commit_file` or `discard_file` it)."""

    id: str
    owner_id: UUID
    filename: str
    storage_key: str
    bytes: int
    sha256: str


_COLUMNS = ", ".join(FileRow.__struct_fields__)
_file_row = kwargs_row(FileRow)


def new_file_id() -> str:
    """`file-<uuid7 hex>`: ids sort by creation time."""
    return f"file-{uuid7().hex}"


def check_purpose(purpose: str | None, allowed: tuple[str, ...] = UPLOAD_PURPOSES) -> str:
    """The purpose, if it is one of `allowed`; else `InvalidUpload` naming the valid ones."""
    if purpose not in allowed:
        got = "missing" if purpose is None else f"{purpose!r} is not valid"
        raise InvalidUpload(f"`purpose` {got}: use one of {', '.join(allowed)}", param="purpose")
    return purpose


async def bytes_used(pool: AsyncConnectionPool, owner_id: UUID) -> int:
    """Bytes of all the owner's files."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT coalesce(sum(bytes), 0) FROM files WHERE owner_id = %s", (owner_id,))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def stage_file(clients: Clients, owner_id: UUID, filename: str, chunks: AsyncIterator[bytes], *,
                     limited: bool = True) -> StagedFile:
    """Stream `chunks` into storage, hashing and counting them (`limited`: within the size limit and quota).

    Raises:
        FileTooLarge: past `max_file_bytes`; nothing stays stored.
        FileQuotaExceeded: past the room the owner's quota had when the upload began; nothing stays stored.
    """
    settings = clients.settings
    room = settings.file_quota_bytes - await bytes_used(clients.pool, owner_id) if limited else float("inf")
    largest = settings.max_file_bytes if limited else float("inf")
    file_id = new_file_id()
    key = f"{owner_id}/{file_id}"
    digest = hashlib.sha256()
    size = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal size
        async for chunk in chunks:
            size += len(chunk)
            # Raised inside the storage's put, which then discards what it wrote.
            if size > largest:
                raise FileTooLarge(f"the file is larger than the limit of {settings.max_file_bytes} bytes",
                                   limit=settings.max_file_bytes)
            if size > room:
                raise _quota_error(settings.file_quota_bytes)
            digest.update(chunk)
            yield chunk

    await clients.storage.put(key, counted())
    return StagedFile(id=file_id, owner_id=owner_id, filename=filename, storage_key=key, bytes=size,
                      sha256=digest.hexdigest())


#: More work on a new file's row in the transaction that writes it (e.g. `jobs.knowledge.Processing`).
Then = Callable[[AsyncConnection[Any], FileRow], Awaitable[FileRow]]


async def commit_file(clients: Clients, staged: StagedFile, purpose: str, *, limited: bool = True,
                      then: Then | None = None) -> FileRow:
    """Write the row of a staged file, if the owner's quota still has room; else delete its bytes.

    `then` runs in the same transaction; if it raises, nothing is written and the bytes are deleted.

    Raises:
        FileQuotaExceeded: the owner's files plus this one exceed `file_quota_bytes`.
    """
    quota = clients.settings.file_quota_bytes if limited else 2**62
    try:
        check_purpose(purpose, PURPOSES)
        async with clients.pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=_file_row) as cur:
            # One user's uploads commit one at a time, so two cannot both fit into the same remaining room.
            await cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s::text))", (_QUOTA_LOCK, staged.owner_id))
            await cur.execute(
                f"""
                INSERT INTO files (id, owner_id, filename, purpose, bytes, sha256, storage_key)
                SELECT %(id)s, %(owner)s, %(filename)s, %(purpose)s, %(bytes)s, %(sha256)s, %(key)s
                WHERE (SELECT coalesce(sum(bytes), 0) FROM files WHERE owner_id = %(owner)s) + %(bytes)s <= %(quota)s
                RETURNING {_COLUMNS}
                """,
                {"id": staged.id, "owner": staged.owner_id, "filename": staged.filename, "purpose": purpose,
                 "bytes": staged.bytes, "sha256": staged.sha256, "key": staged.storage_key, "quota": quota},
            )
            row = await cur.fetchone()
            if row is None:
                raise _quota_error(quota)
            if then is not None:
                row = await then(conn, row)
    except BaseException:
        await discard_file(clients, staged)
        raise
    logger.bind(file_id=row.id).info("file stored ({} bytes, purpose {})", row.bytes, row.purpose)
    return row


async def discard_file(clients: Clients, staged: StagedFile) -> None:
    """Delete the bytes of a staged file that will not be committed."""
    with anyio.CancelScope(shield=True):
        await clients.storage.delete(staged.storage_key)


async def store_file(clients: Clients, owner_id: UUID, filename: str, purpose: str,
                     chunks: AsyncIterator[bytes]) -> FileRow:
    """Store a file: stream its bytes into storage, then write its row (any purpose, `batch_output` included:
    a batch's output and error files are not held to the upload size limit nor the quota, though they count in it).

    Raises:
        FileTooLarge, FileQuotaExceeded: nothing was stored.
    """
    check_purpose(purpose, PURPOSES)
    # What the platform writes for the user (a batch's output) must never be refused half-way through a batch.
    limited = purpose != "batch_output"
    staged = await stage_file(clients, owner_id, filename, chunks, limited=limited)
    return await commit_file(clients, staged, purpose, limited=limited)


async def lock_file(conn: AsyncConnection[Any], file_id: str, owner_id: UUID) -> FileRow:
    """The owner's file, its row locked for the caller's transaction.

    Raises:
        FileNotFound: no such file for this owner.
    """
    async with conn.cursor(row_factory=_file_row) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM files WHERE id = %s AND owner_id = %s FOR UPDATE",
                          (file_id, owner_id))
        row = await cur.fetchone()
    if row is None:
        raise FileNotFound(f"file {file_id!r} not found")
    return row


async def get_file(pool: AsyncConnectionPool, file_id: str, owner_id: UUID | None) -> FileRow | None:
    """One file, if it exists and `owner_id` owns it (`None`: any owner, for admins and workers)."""
    async with pool.connection() as conn, conn.cursor(row_factory=_file_row) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM files WHERE id = %s AND (%s::uuid IS NULL OR owner_id = %s)",
            (file_id, owner_id, owner_id),
        )
        return await cur.fetchone()


async def list_files(
    pool: AsyncConnectionPool,
    owner_id: UUID,
    purpose: str | None = None,
    after: str | None = None,
    limit: int = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> list[FileRow]:
    """The owner's files in creation order (`desc`: newest first), those after the file id `after`."""
    direction, beyond = ("ASC", ">") if order == "asc" else ("DESC", "<")
    async with pool.connection() as conn, conn.cursor(row_factory=_file_row) as cur:
        await cur.execute(
            f"""
            SELECT {_COLUMNS} FROM files
            WHERE owner_id = %(owner)s
              AND (%(purpose)s::text IS NULL OR purpose = %(purpose)s)
              AND (%(after)s::text IS NULL OR id {beyond} %(after)s)
            ORDER BY id {direction}
            LIMIT %(limit)s
            """,
            {"owner": owner_id, "purpose": purpose, "after": after, "limit": limit},
        )
        return await cur.fetchall()


async def delete_file(clients: Clients, file_id: str, owner_id: UUID | None) -> FileRow | None:
    """Delete a file's row, then its bytes; None if there is no such file for this owner.

    The row goes first: a failure in between leaves unreferenced bytes (logged), never a row without bytes.
    """
    async with clients.pool.connection() as conn, conn.cursor(row_factory=_file_row) as cur:
        await cur.execute(
            f"DELETE FROM files WHERE id = %s AND (%s::uuid IS NULL OR owner_id = %s) RETURNING {_COLUMNS}",
            (file_id, owner_id, owner_id),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    try:
        with anyio.CancelScope(shield=True):
            await clients.storage.delete(row.storage_key)
    except Exception:
        logger.opt(exception=True).bind(file_id=row.id).error("file deleted, but not its stored bytes")
    return row


async def read_file(clients: Clients, row: FileRow) -> AsyncIterator[bytes]:
    """The file's bytes in chunks (await it: a missing object raises `FileNotFound` before the first chunk)."""
    try:
        return await clients.storage.get(row.storage_key)
    except FileNotFound:
        logger.bind(file_id=row.id).error("file row without stored bytes ({})", row.storage_key)
        raise FileNotFound(f"file {row.id!r} has no stored content") from None


def _quota_error(quota: int) -> FileQuotaExceeded:
    return FileQuotaExceeded(f"your files would exceed your storage quota of {quota} bytes; delete some first",
                             quota=quota)
