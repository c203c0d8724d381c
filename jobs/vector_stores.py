"""Vector stores (OpenAI's API): named sets of the owner's processed files, searched together.

A store holds no chunks of its own: adding a file links it (`vector_store_files`,
with `attributes` for search filters), and a store's search is the knowledge
search (`jobs/knowledge.py`) scoped to its files. A file's status in a store is
its processing status (`processing` → `in_progress`, `processed` →
`completed`, `error` → `failed` with `last_error`). Every query names the
owner, so another user's store or file is simply not found.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from jobs import files, knowledge
from jobs.errors import (
    FileNotSearchable,
    InvalidRequest,
    QueryTooLong,
    VectorStoreFull,
    VectorStoreNotFound,
)
from jobs.ids import uuid7
from jobs.kinds import Metadata
from jobs.openai_format import OpenAIList, openai_page
from jobs.settings import Settings

#: OpenAI's limits on file attributes.
MAX_ATTRIBUTES = 16
#: Comparisons one `filters` tree may hold, and how deep it may nest.
MAX_FILTERS = 64
MAX_FILTER_DEPTH = 5

AttributeValue = Annotated[str, msgspec.Meta(max_length=512)] | float | bool
Attributes = Annotated[dict[Annotated[str, msgspec.Meta(max_length=64)], AttributeValue],
                       msgspec.Meta(max_length=MAX_ATTRIBUTES)]


# --- Requests ------------------------------------------------------------------------------------------------


class ExpiresAfter(msgspec.Struct, frozen=True, kw_only=True):
    """The store expires `days` after it was last used."""

    anchor: Literal["last_active_at"] = "last_active_at"
    days: Annotated[int, msgspec.Meta(ge=1, le=365)]


class StaticChunking(msgspec.Struct, frozen=True, kw_only=True):
    max_chunk_size_tokens: Annotated[int, msgspec.Meta(ge=100, le=4096)]
    chunk_overlap_tokens: Annotated[int, msgspec.Meta(ge=0)]


class ChunkingStrategy(msgspec.Struct, frozen=True, kw_only=True):
    """`auto`, or `static` with the platform's own sizes (files are chunked once, when uploaded)."""

    type: Literal["auto", "static"] = "auto"
    static: StaticChunking | None = None


class CreateVectorStore(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/vector_stores`."""

    name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    file_ids: Annotated[list[str], msgspec.Meta(max_length=500)] = []
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingStrategy | None = None
    metadata: Metadata | None = None


class UpdateVectorStore(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/vector_stores/{id}`: only the fields given change."""

    name: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    expires_after: ExpiresAfter | None = None
    metadata: Metadata | None = None


class AddFile(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/vector_stores/{id}/files`."""

    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategy | None = None


class UpdateFile(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/vector_stores/{id}/files/{file_id}`."""

    attributes: Attributes | None


class RankingOptions(msgspec.Struct, frozen=True, kw_only=True):
    ranker: Literal["auto", "default-2024-11-15", "none"] = "auto"
    score_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0


class SearchStore(msgspec.Struct, frozen=True, kw_only=True):
    """`POST /v1/vector_stores/{id}/search` (plus `mode`: `hybrid` by default, `vector` or `text`)."""

    query: str | Annotated[list[str], msgspec.Meta(min_length=1, max_length=16)]
    max_num_results: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False
    mode: knowledge.SearchMode = "hybrid"

    @property
    def text(self) -> str:
        """The query as one string."""
        return self.query if isinstance(self.query, str) else " ".join(self.query)


def check_query(settings: Settings, query: str) -> str:
    """The query, stripped, if it is not blank nor too long.

    Raises:
        InvalidRequest: blank. QueryTooLong: longer than `max_query_chars`.
    """
    query = query.strip()
    if not query:
        raise InvalidRequest("`query` is empty", param="query")
    if len(query) > settings.max_query_chars:
        raise QueryTooLong(f"the query has {len(query)} characters; the limit is {settings.max_query_chars}",
                           limit=settings.max_query_chars)
    return query


def check_chunking(settings: Settings, strategy: ChunkingStrategy | None) -> None:
    """`auto`, or a `static` strategy equal to the platform's chunking; else `InvalidRequest`."""
    if strategy is None or strategy.type == "auto":
        return
    static = strategy.static
    if static is None or (static.max_chunk_size_tokens, static.chunk_overlap_tokens) != (
            settings.chunk_tokens, settings.chunk_overlap_tokens):
        raise InvalidRequest(
            "files are chunked once, when uploaded, with max_chunk_size_tokens="
            f"{settings.chunk_tokens} and chunk_overlap_tokens={settings.chunk_overlap_tokens}; use `auto` or "
            "those values (reprocess a file with `POST /v1/files/{id}/process` after changing the settings)",
            param="chunking_strategy")


# --- Filters -------------------------------------------------------------------------------------------------

_COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def filter_sql(tree: dict[str, Any]) -> tuple[sql.Composable, dict[str, Any]]:
    """OpenAI's search `filters` (comparisons and `and`/`or` compounds over file attributes) as a SQL
    condition on `vsf.attributes`, with every key and value a bound parameter.

    Raises:
        InvalidRequest: a malformed tree, naming what is wrong.
    """
    params: dict[str, Any] = {}
    counter = itertools.count()

    def bad(why: str) -> InvalidRequest:
        return InvalidRequest(f"invalid `filters`: {why}", param="filters")

    def value_ok(v: Any) -> bool:
        return isinstance(v, str | int | float | bool) and not (isinstance(v, str) and len(v) > 512)

    def walk(node: Any, depth: int) -> sql.Composable:
        if depth > MAX_FILTER_DEPTH:
            raise bad(f"nested deeper than {MAX_FILTER_DEPTH}")
        if not isinstance(node, dict):
            raise bad("each filter is an object with a `type`")
        kind = node.get("type")
        if kind in ("and", "or"):
            children = node.get("filters")
            if not isinstance(children, list) or not children:
                raise bad(f"`{kind}` needs a non-empty `filters` list")
            joined = sql.SQL(f" {kind.upper()} ").join(walk(child, depth + 1) for child in children)
            return sql.SQL("({})").format(joined)
        n = next(counter)
        if n >= MAX_FILTERS:
            raise bad(f"more than {MAX_FILTERS} comparisons")
        key, value = node.get("key"), node.get("value")
        if not isinstance(key, str) or not key or len(key) > 64:
            raise bad("a comparison needs a `key` (a string of at most 64 characters)")
        attr = sql.SQL("(vsf.attributes -> {})").format(sql.Placeholder(f"fk{n}"))
        params[f"fk{n}"] = key
        if kind in ("in", "nin"):
            if not isinstance(value, list) or not value or not all(value_ok(v) for v in value):
                raise bad(f"`{kind}` needs a non-empty list of strings, numbers or booleans as `value`")
            params[f"fv{n}"] = [json.dumps(v) for v in value]
            member = sql.SQL("{} = ANY({}::jsonb[])").format(attr, sql.Placeholder(f"fv{n}"))
            return member if kind == "in" else sql.SQL("NOT coalesce({}, false)").format(member)
        if kind not in _COMPARISONS:
            raise bad(f"unknown type {kind!r}: use eq, ne, gt, gte, lt, lte, in, nin, and, or")
        if not value_ok(value):
            raise bad("`value` must be a string, number or boolean")
        params[f"fv{n}"] = json.dumps(value)
        literal = sql.SQL("{}::jsonb").format(sql.Placeholder(f"fv{n}"))
        if kind == "eq":
            return sql.SQL("{} = {}").format(attr, literal)
        if kind == "ne":
            return sql.SQL("{} IS DISTINCT FROM {}").format(attr, literal)
        # Orderings compare like with like: numbers numerically, strings as text, never across types.
        return sql.SQL("(jsonb_typeof({a}) = jsonb_typeof({v}) AND {a} {op} {v})").format(
            a=attr, v=literal, op=sql.SQL(_COMPARISONS[kind]))

    return walk(tree, 1), params


# --- Views ---------------------------------------------------------------------------------------------------


class FileCounts(msgspec.Struct, frozen=True, kw_only=True):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class VectorStore(msgspec.Struct, frozen=True, kw_only=True):
    """A vector store as OpenAI's API shows it."""

    id: str
    created_at: int
    name: str | None
    usage_bytes: int
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    expires_after: dict[str, Any] | None
    expires_at: int | None
    last_active_at: int
    metadata: dict[str, str] | None
    object: str = "vector_store"


class VectorStoreList(OpenAIList[VectorStore], frozen=True, kw_only=True):
    """A page of vector stores."""


class LastError(msgspec.Struct, frozen=True, kw_only=True):
    #: OpenAI's codes (`unsupported_file`, `invalid_file`, `server_error`); `message` starts with ours.
    code: str
    message: str


class VectorStoreFile(msgspec.Struct, frozen=True, kw_only=True):
    """A file in a vector store, as OpenAI's API shows it."""

    id: str
    vector_store_id: str
    created_at: int
    usage_bytes: int
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    last_error: LastError | None
    attributes: dict[str, Any]
    chunking_strategy: dict[str, Any]
    object: str = "vector_store.file"


class VectorStoreFileList(OpenAIList[VectorStoreFile], frozen=True, kw_only=True):
    """A page of a store's files."""


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    object: str
    deleted: bool = True


class SearchContent(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    type: str = "text"


class SearchResult(msgspec.Struct, frozen=True, kw_only=True):
    """One result of a store's search (OpenAI's shape, plus where the chunk lies)."""

    file_id: str
    filename: str
    score: float
    attributes: dict[str, Any]
    content: list[SearchContent]
    page: int | None = None
    char_start: int | None = None
    char_end: int | None = None


class SearchPage(msgspec.Struct, frozen=True, kw_only=True):
    """`vector_store.search_results.page`."""

    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None
    object: str = "vector_store.search_results.page"

    @classmethod
    def of(cls, query: str, hits: list[knowledge.Hit]) -> SearchPage:
        return cls(search_query=[query], data=[
            SearchResult(file_id=h.file_id, filename=h.filename, score=round(h.score, 6), attributes=h.attributes,
                         content=[SearchContent(text=h.text)], page=h.page, char_start=h.char_start,
                         char_end=h.char_end) for h in hits])


def _ts(value: datetime) -> int:
    return int(value.timestamp())


def _chunking(settings: Settings) -> dict[str, Any]:
    return {"type": "static", "static": {"max_chunk_size_tokens": settings.chunk_tokens,
                                         "chunk_overlap_tokens": settings.chunk_overlap_tokens}}


_STATUS = {"processing": "in_progress", "processed": "completed", "error": "failed"}


def _last_error(status: str, details: str | None) -> LastError | None:
    if status != "error":
        return None
    code = (details or "").split(":", 1)[0]
    openai_code = "unsupported_file" if code == "unsupported_file_type" else (
        "invalid_file" if code.startswith("file_") else "server_error")
    return LastError(code=openai_code, message=details or "processing failed")


# --- Queries -------------------------------------------------------------------------------------------------

_STORE_SQL = """
    SELECT s.id, s.name, s.metadata, s.expires_after, s.created_at, s.last_active_at,
           count(f.id) AS total,
           count(f.id) FILTER (WHERE f.status = 'processing') AS in_progress,
           count(f.id) FILTER (WHERE f.status = 'processed') AS completed,
           count(f.id) FILTER (WHERE f.status = 'error') AS failed,
           coalesce(sum(f.bytes) FILTER (WHERE f.status = 'processed'), 0) AS usage_bytes
    FROM vector_stores s
    LEFT JOIN vector_store_files vsf ON vsf.vector_store_id = s.id
    LEFT JOIN files f ON f.id = vsf.file_id
    WHERE s.owner_id = %(owner)s {where}
    GROUP BY s.id
"""


def _store_view(r: dict[str, Any]) -> VectorStore:
    expires_at = None
    if r["expires_after"]:
        expires_at = r["last_active_at"] + timedelta(days=int(r["expires_after"]["days"]))
    status: Literal["expired", "in_progress", "completed"] = "in_progress" if r["in_progress"] else "completed"
    if expires_at is not None and expires_at <= datetime.now(UTC):
        status = "expired"
    return VectorStore(
        id=r["id"], created_at=_ts(r["created_at"]), name=r["name"], usage_bytes=int(r["usage_bytes"]),
        file_counts=FileCounts(in_progress=r["in_progress"], completed=r["completed"], failed=r["failed"],
                               total=r["total"]),
        status=status, expires_after=r["expires_after"], expires_at=_ts(expires_at) if expires_at else None,
        last_active_at=_ts(r["last_active_at"]), metadata=r["metadata"])


async def get_store(pool: AsyncConnectionPool, store_id: str, owner_id: UUID) -> VectorStore:
    """One of the owner's stores.

    Raises:
        VectorStoreNotFound: no such store for this owner.
    """
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_STORE_SQL.format(where="AND s.id = %(id)s"), {"owner": owner_id, "id": store_id})
        row = await cur.fetchone()
    if row is None:
        raise VectorStoreNotFound(f"vector store {store_id!r} not found")
    return _store_view(row)


async def list_stores(pool: AsyncConnectionPool, owner_id: UUID, *, after: str | None, before: str | None,
                      limit: int, order: Literal["asc", "desc"]) -> VectorStoreList:
    """A page of the owner's stores."""
    direction = "ASC" if order == "asc" else "DESC"
    where = "AND (%(after)s::text IS NULL OR s.id {a} %(after)s) AND (%(before)s::text IS NULL OR s.id {b} %(before)s)"
    where = where.format(a=">" if order == "asc" else "<", b="<" if order == "asc" else ">")
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_STORE_SQL.format(where=where) + f" ORDER BY s.id {direction} LIMIT %(limit)s",
                          {"owner": owner_id, "after": after, "before": before, "limit": limit + 1})
        rows = await cur.fetchall()
    return openai_page(VectorStoreList, [_store_view(r) for r in rows[:limit]], len(rows) > limit)


async def _lock_store(conn: AsyncConnection[Any], store_id: str, owner_id: UUID) -> None:
    cur = await conn.execute("SELECT 1 FROM vector_stores WHERE id = %s AND owner_id = %s FOR UPDATE",
                             (store_id, owner_id))
    if await cur.fetchone() is None:
        raise VectorStoreNotFound(f"vector store {store_id!r} not found")


async def _link(conn: AsyncConnection[Any], settings: Settings, store_id: str, owner_id: UUID, file_id: str,
                attributes: dict[str, Any] | None) -> None:
    """Add (or re-add, replacing its attributes) one of the owner's searchable files to a locked store."""
    row = await files.lock_file(conn, file_id, owner_id)
    if row.purpose not in knowledge.SEARCH_PURPOSES:
        raise FileNotSearchable(f"file {file_id!r} has purpose {row.purpose!r}; upload files for search with "
                                f"purpose {' or '.join(knowledge.SEARCH_PURPOSES)}", param="file_id")
    cur = await conn.execute(
        """
        INSERT INTO vector_store_files (vector_store_id, file_id, owner_id, attributes)
        SELECT %(store)s, %(file)s, %(owner)s, %(attributes)s::jsonb
        WHERE EXISTS (SELECT 1 FROM vector_store_files WHERE vector_store_id = %(store)s AND file_id = %(file)s)
           OR (SELECT count(*) FROM vector_store_files WHERE vector_store_id = %(store)s) < %(limit)s
        ON CONFLICT (vector_store_id, file_id) DO UPDATE SET attributes = EXCLUDED.attributes
        RETURNING 1
        """,
        {"store": store_id, "file": file_id, "owner": owner_id, "attributes": json.dumps(attributes or {}),
         "limit": settings.max_vector_store_files})
    if await cur.fetchone() is None:
        raise VectorStoreFull(f"vector store {store_id!r} already holds {settings.max_vector_store_files} files, "
                              "the most one store may", limit=settings.max_vector_store_files)


async def touch(pool: AsyncConnectionPool, store_id: str, owner_id: UUID) -> None:
    """The store was used (a search): its expiry counts from now."""
    async with pool.connection() as conn:
        await conn.execute("UPDATE vector_stores SET last_active_at = now() WHERE id = %s AND owner_id = %s",
                           (store_id, owner_id))


async def create_store(pool: AsyncConnectionPool, settings: Settings, owner_id: UUID,
                       req: CreateVectorStore) -> VectorStore:
    """A new store holding `req.file_ids` (all or nothing).

    Raises:
        FileNotFound, FileNotSearchable, VectorStoreFull, InvalidRequest: nothing was created.
    """
    check_chunking(settings, req.chunking_strategy)
    store_id = f"vs_{uuid7().hex}"
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO vector_stores (id, owner_id, name, metadata, expires_after) VALUES (%s, %s, %s, %s, %s)",
            (store_id, owner_id, req.name, _json(req.metadata), _json(req.expires_after)))
        for file_id in dict.fromkeys(req.file_ids):
            await _link(conn, settings, store_id, owner_id, file_id, None)
    return await get_store(pool, store_id, owner_id)


async def update_store(pool: AsyncConnectionPool, store_id: str, owner_id: UUID,
                       req: UpdateVectorStore) -> VectorStore:
    """Change a store's name, metadata or expiry (fields not given stay)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """
            UPDATE vector_stores SET name = coalesce(%s, name), metadata = coalesce(%s::jsonb, metadata),
                   expires_after = coalesce(%s::jsonb, expires_after)
            WHERE id = %s AND owner_id = %s RETURNING 1
            """, (req.name, _json(req.metadata), _json(req.expires_after), store_id, owner_id))
        if await cur.fetchone() is None:
            raise VectorStoreNotFound(f"vector store {store_id!r} not found")
    return await get_store(pool, store_id, owner_id)


async def delete_store(pool: AsyncConnectionPool, store_id: str, owner_id: UUID) -> Deleted:
    """Delete a store (its files stay: they are the owner's, and may be in other stores)."""
    async with pool.connection() as conn:
        cur = await conn.execute("DELETE FROM vector_stores WHERE id = %s AND owner_id = %s RETURNING 1",
                                 (store_id, owner_id))
        if await cur.fetchone() is None:
            raise VectorStoreNotFound(f"vector store {store_id!r} not found")
    return Deleted(id=store_id, object="vector_store.deleted")


_FILE_SQL = """
    SELECT vsf.file_id, vsf.vector_store_id, vsf.created_at, vsf.attributes, f.bytes, f.status, f.status_details
    FROM vector_store_files vsf JOIN files f ON f.id = vsf.file_id
    WHERE vsf.vector_store_id = %(store)s AND vsf.owner_id = %(owner)s {where}
"""


def _file_view(settings: Settings, r: dict[str, Any]) -> VectorStoreFile:
    status = _STATUS.get(r["status"], "completed")
    return VectorStoreFile(
        id=r["file_id"], vector_store_id=r["vector_store_id"], created_at=_ts(r["created_at"]),
        usage_bytes=int(r["bytes"]) if status == "completed" else 0, status=status,  # type: ignore[arg-type]
        last_error=_last_error(r["status"], r["status_details"]), attributes=r["attributes"] or {},
        chunking_strategy=_chunking(settings))


async def add_file(pool: AsyncConnectionPool, settings: Settings, store_id: str, owner_id: UUID,
                   req: AddFile) -> VectorStoreFile:
    """Add one of the owner's files to a store (again: replace its attributes)."""
    check_chunking(settings, req.chunking_strategy)
    async with pool.connection() as conn, conn.transaction():
        await _lock_store(conn, store_id, owner_id)
        await _link(conn, settings, store_id, owner_id, req.file_id, req.attributes)
    return await get_file(pool, settings, store_id, owner_id, req.file_id)


async def get_file(pool: AsyncConnectionPool, settings: Settings, store_id: str, owner_id: UUID,
                   file_id: str) -> VectorStoreFile:
    """One file of one of the owner's stores.

    Raises:
        VectorStoreNotFound: no such store, or the file is not in it.
    """
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FILE_SQL.format(where="AND vsf.file_id = %(file)s"),
                          {"store": store_id, "owner": owner_id, "file": file_id})
        row = await cur.fetchone()
    if row is None:
        raise VectorStoreNotFound(f"file {file_id!r} is not in vector store {store_id!r}")
    return _file_view(settings, row)


async def update_file(pool: AsyncConnectionPool, settings: Settings, store_id: str, owner_id: UUID,
                      file_id: str, attributes: dict[str, Any] | None) -> VectorStoreFile:
    """Replace a store file's attributes."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE vector_store_files SET attributes = %s::jsonb WHERE vector_store_id = %s AND file_id = %s "
            "AND owner_id = %s RETURNING 1", (json.dumps(attributes or {}), store_id, file_id, owner_id))
        if await cur.fetchone() is None:
            raise VectorStoreNotFound(f"file {file_id!r} is not in vector store {store_id!r}")
    return await get_file(pool, settings, store_id, owner_id, file_id)


FileFilter = Literal["in_progress", "completed", "failed", "cancelled"]
_FILE_STATUS = {"in_progress": "processing", "completed": "processed", "failed": "error", "cancelled": "cancelled"}


async def list_files(pool: AsyncConnectionPool, settings: Settings, store_id: str, owner_id: UUID, *,
                     after: str | None, before: str | None, limit: int, order: Literal["asc", "desc"],
                     status: FileFilter | None) -> VectorStoreFileList:
    """A page of a store's files (`status`: only those in that state)."""
    await get_store(pool, store_id, owner_id)
    direction = "ASC" if order == "asc" else "DESC"
    where = ("AND (%(status)s::text IS NULL OR f.status = %(status)s) "
             "AND (%(after)s::text IS NULL OR vsf.file_id {a} %(after)s) "
             "AND (%(before)s::text IS NULL OR vsf.file_id {b} %(before)s)").format(
        a=">" if order == "asc" else "<", b="<" if order == "asc" else ">")
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_FILE_SQL.format(where=where) + f" ORDER BY vsf.file_id {direction} LIMIT %(limit)s",
                          {"store": store_id, "owner": owner_id, "after": after, "before": before,
                           "limit": limit + 1, "status": _FILE_STATUS[status] if status else None})
        rows = await cur.fetchall()
    return openai_page(VectorStoreFileList, [_file_view(settings, r) for r in rows[:limit]], len(rows) > limit)


async def remove_file(pool: AsyncConnectionPool, store_id: str, owner_id: UUID, file_id: str) -> Deleted:
    """Take a file out of a store (the file itself stays)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "DELETE FROM vector_store_files WHERE vector_store_id = %s AND file_id = %s AND owner_id = %s "
            "RETURNING 1", (store_id, file_id, owner_id))
        if await cur.fetchone() is None:
            raise VectorStoreNotFound(f"file {file_id!r} is not in vector store {store_id!r}")
    return Deleted(id=file_id, object="vector_store.file.deleted")


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()

