"""Knowledge: files made searchable (`file.process`), their chunks, and hybrid search over them.

    upload (purpose assistants | user_data) ─► file row `processing` + `file.process` job, one transaction
    worker: extract ─► chunk ─► embed ─► chunks written in the job's ending transaction ─► `processed`
    job failed / cancelled / expired ─► `error` with the reason (only if the file still shows that job)

A file's chunks are replaced in the transaction that ends its job
(`store_chunks`, run by `lifecycle.succeed` after the claim is verified):
a search sees all of a document or none of it, a reprocessing swaps the
whole set at once, and a worker that lost its claim writes nothing.

Search is hybrid by default: the nearest chunks by cosine distance (pgvector,
an HNSW index per vector size) and the best full-text matches (PostgreSQL
`tsvector`: chunks matching every term; only if none does, any term) are fused by
reciprocal rank (`score = Σ 1 / (60 + rank)`). `vector` and `text` modes run
one side alone. Every query filters by owner in SQL, on the chunks themselves.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from jobs import credits, files, store
from jobs.catalog import Route
from jobs.clients import Clients
from jobs.enqueue import insert_reserved, send_after_commit
from jobs.errors import FileNotSearchable, SwitchyardError
from jobs.ids import uuid7
from jobs.kinds import FileProcessInput, FileProcessJob
from jobs.settings import Settings

if TYPE_CHECKING:  # the chunker's tokenizer tables load only in processes that chunk (files workers)
    from jobs.chunking import Chunk

#: Purposes whose files are processed for search when uploaded.
SEARCH_PURPOSES = ("assistants", "user_data")
#: Reciprocal rank fusion's constant (the usual 60: a rank-1 hit scores 1/61).
RRF_K = 60
#: Candidates each side of a hybrid search brings, at least (and `4 × top_k` when more).
MIN_CANDIDATES = 40
#: The most candidates one side may bring (also HNSW's `ef_search` ceiling).
MAX_CANDIDATES = 1_000
#: Full-text matches ranked at most, per side (ranking reads each match's `tsvector`: ~10 µs a chunk).
MAX_TEXT_MATCHES = 2_000
#: HNSW's search breadth at least: at 100k chunks, 100 finds ~98% of the exact top 10 where pgvector's default
#: 40 finds ~94%, for about a millisecond more (`scripts/bench/files.py`, docs/benchmarks.md).
MIN_EF_SEARCH = 100

SearchMode = Literal["hybrid", "vector", "text"]
#: Writes an effect inside the ending transaction of a job (see `lifecycle.succeed`).
Effect = Callable[[AsyncConnection[Any]], Awaitable[None]]


# --- Starting and ending processing --------------------------------------------------------------------------


def reservation(route: Route, settings: Settings, nbytes: int, fallback: bool = True) -> int:
    """The most a file's processing can cost: every token of its chunks embedded, on the dearest target.

    Tokens are bounded by the file's size (no tokenizer spends less than half a byte on a token, and
    overlap repeats a share of each chunk) and by the chunk limit.
    """
    overlap = settings.chunk_tokens / max(1, settings.chunk_tokens - settings.chunk_overlap_tokens)
    tokens = min(settings.max_file_chunks * settings.chunk_tokens, math.ceil(nbytes / 2 * overlap) + 1)
    targets = route.targets if fallback else route.targets[:1]
    return max(credits.cost(tokens, 0, t.input_price, 0) for t in targets)


def process_job(settings: Settings, file_id: str) -> FileProcessJob:
    """The `file.process` job of a file, with the current chunking settings."""
    return FileProcessJob(input=FileProcessInput(
        file_id=file_id, model=settings.knowledge_embedding_model, chunk_tokens=settings.chunk_tokens,
        overlap_tokens=settings.chunk_overlap_tokens))


class Processing:
    """Starts a file's processing inside the transaction that writes (or locks) its row.

    Call it with the connection and the row (`files.commit_file(..., then=processing)`), then
    `send()` after the commit.
    """

    def __init__(self, clients: Clients, route: Route) -> None:
        self.clients = clients
        self.route = route
        self.job: store.JobRow | None = None

    async def __call__(self, conn: AsyncConnection[Any], row: files.FileRow) -> files.FileRow:
        """Insert the job (reserving its worst case) and mark the file `processing`.

        Raises:
            InsufficientCredits: the owner cannot cover the processing (the transaction must roll back).
        """
        settings = self.clients.settings
        job = process_job(settings, row.id)
        self.job, _ = await insert_reserved(
            conn, job, owner_id=row.owner_id, job_id=uuid7(), max_attempts=settings.max_attempts,
            reserve=reservation(self.route, settings, row.bytes))
        await conn.execute(
            "UPDATE files SET status = 'processing', status_details = NULL, process_job_id = %s WHERE id = %s",
            (self.job.id, row.id))
        return msgspec.structs.replace(row, status="processing", status_details=None, process_job_id=self.job.id)

    async def send(self) -> None:
        """After the commit: announce and send the job."""
        await send_after_commit(self.clients, self.job)


async def reprocess(clients: Clients, route: Route, file_id: str, owner_id: UUID) -> tuple[files.FileRow,
                                                                                          store.JobRow]:
    """Process a file again (new chunking settings or model, or after an error); its old chunks stay
    searchable until the new ones replace them.

    Raises:
        FileNotFound: no such file for this owner.
        FileNotSearchable: the file is not for search (purpose `batch`, `batch_output`).
        InsufficientCredits: nothing changed.
    """
    processing = Processing(clients, route)
    async with clients.pool.connection() as conn, conn.transaction():
        row = await files.lock_file(conn, file_id, owner_id)
        if row.purpose not in SEARCH_PURPOSES:
            raise FileNotSearchable(f"file {file_id!r} has purpose {row.purpose!r}; only files uploaded with "
                                    f"purpose {' or '.join(SEARCH_PURPOSES)} are searchable")
        row = await processing(conn, row)
    await processing.send()
    assert processing.job is not None
    return row, processing.job


async def file_failed(conn: AsyncConnection[Any], job: store.JobRow, error: dict[str, Any] | None) -> None:
    """A `file.process` job ended without a result: its file shows `error` and why (if it still shows this job)."""
    code = (error or {}).get("code", "internal_error")
    message = (error or {}).get("message", "processing failed")
    await conn.execute(
        "UPDATE files SET status = 'error', status_details = %s WHERE id = %s AND process_job_id = %s",
        (f"{code}: {message}"[:2000], job.input.get("file_id"), job.id))


# --- Chunks --------------------------------------------------------------------------------------------------


def vector_literal(vector: Sequence[float]) -> str:
    """A vector in pgvector's text form."""
    return "[" + ",".join(f"{v:.7g}" for v in vector) + "]"


_indexed: set[int] = set()


async def ensure_index(pool: AsyncConnectionPool, dims: int) -> None:
    """The partial HNSW index that searches of `dims`-sized vectors use (created once, if missing)."""
    if dims in _indexed:
        return
    name = f"file_chunks_hnsw_{dims}"
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", (name,))
        if await cur.fetchone() is None:
            # One creator at a time; IF NOT EXISTS covers the one that lost the race.
            await conn.execute("SELECT pg_advisory_lock(7243003)")
            try:
                await conn.execute(sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON file_chunks USING hnsw ((embedding::vector({})) "
                    "vector_cosine_ops) WHERE dims = {}").format(sql.Identifier(name), sql.Literal(dims),
                                                                 sql.Literal(dims)))
            finally:
                await conn.execute("SELECT pg_advisory_unlock(7243003)")
    _indexed.add(dims)


class ProcessedSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What processing found in a file (`files.processed`)."""

    type: str
    pages: int
    characters: int
    chunks: int
    tokens: int
    model: str
    dimensions: int


def store_chunks(job_id: UUID, file_id: str, owner_id: UUID, chunks: list[Chunk], vectors: list[list[float]],
                 summary: ProcessedSummary) -> Effect:
    """The effect of a successful `file.process` job: replace the file's chunks and mark it `processed`.

    Nothing is written when the file was deleted meanwhile, or a newer job took it over.
    """

    async def effect(conn: AsyncConnection[Any]) -> None:
        cur = await conn.execute(
            "SELECT 1 FROM files WHERE id = %s AND owner_id = %s AND process_job_id = %s FOR UPDATE",
            (file_id, owner_id, job_id))
        if await cur.fetchone() is None:
            return
        await conn.execute("DELETE FROM file_chunks WHERE file_id = %s", (file_id,))
        async with conn.cursor().copy(
            "COPY file_chunks (file_id, seq, owner_id, page, page_end, char_start, char_end, tokens, content, "
            "dims, embedding) FROM STDIN"
        ) as copy:
            for chunk, vector in zip(chunks, vectors, strict=True):
                await copy.write_row((file_id, chunk.seq, owner_id, chunk.page, chunk.page_end, chunk.char_start,
                                      chunk.char_end, chunk.tokens, chunk.text.replace("\x00", ""), len(vector),
                                      vector_literal(vector)))
        await conn.execute(
            "UPDATE files SET status = 'processed', status_details = NULL, processed = %s WHERE id = %s",
            (msgspec.json.encode(summary).decode(), file_id))

    return effect


class ChunkView(msgspec.Struct, frozen=True, kw_only=True):
    """One stored chunk of a file, with where it lies in the extracted text."""

    file_id: str
    index: int
    text: str
    tokens: int
    page: int | None
    page_end: int | None
    char_start: int
    char_end: int


async def file_chunks(pool: AsyncConnectionPool, file_id: str, owner_id: UUID, *, after: int = -1,
                      limit: int = 100) -> list[ChunkView]:
    """A file's chunks in order (those after index `after`)."""
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """
            SELECT file_id, seq AS index, content AS text, tokens, page, page_end, char_start, char_end
            FROM file_chunks WHERE file_id = %s AND owner_id = %s AND seq > %s ORDER BY seq LIMIT %s
            """, (file_id, owner_id, after, limit))
        return [ChunkView(**r) for r in await cur.fetchall()]


# --- Search --------------------------------------------------------------------------------------------------


class Hit(msgspec.Struct, frozen=True, kw_only=True):
    """One chunk a search found."""

    file_id: str
    filename: str
    index: int
    text: str
    page: int | None
    page_end: int | None
    char_start: int
    char_end: int
    #: hybrid: the fused score scaled to 0..1 (1 = first on both sides); vector: cosine similarity;
    #: text: the full-text rank.
    score: float
    #: Cosine similarity to the query (None when the vector side did not bring the chunk).
    similarity: float | None
    #: 1-based ranks on each side (None: not among that side's candidates).
    vector_rank: int | None
    text_rank: int | None
    #: The file's attributes in the vector store searched (empty elsewhere).
    attributes: dict[str, Any] = {}


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    """Which of the owner's chunks a search looks at."""

    owner_id: UUID
    #: Only these files (None: all the owner's files).
    file_ids: list[str] | None = None
    #: Only the files of this vector store, and of those only the ones whose attributes pass `where`.
    vector_store_id: str | None = None
    #: A condition over `vsf.attributes` (`jobs/vector_stores.filter_sql`) and its parameters.
    where: sql.Composable | None = None
    where_params: dict[str, Any] = {}


def _scope_sql(scope: Scope) -> tuple[sql.Composable, dict[str, Any]]:
    parts: list[sql.Composable] = [sql.SQL("c.owner_id = %(owner)s")]
    params: dict[str, Any] = {"owner": scope.owner_id, **scope.where_params}
    if scope.file_ids is not None:
        parts.append(sql.SQL("c.file_id = ANY(%(files)s)"))
        params["files"] = scope.file_ids
    if scope.vector_store_id is not None:
        member: sql.Composable = sql.SQL(
            "vsf.vector_store_id = %(store)s AND vsf.file_id = c.file_id AND vsf.owner_id = %(owner)s")
        if scope.where is not None:
            member = sql.SQL("{} AND ({})").format(member, scope.where)
        parts.append(sql.SQL("EXISTS (SELECT 1 FROM vector_store_files vsf WHERE {})").format(member))
        params["store"] = scope.vector_store_id
    return sql.SQL(" AND ").join(parts), params


def _vector_side(dims: int, scope_sql: sql.Composable) -> sql.Composable:
    cast = sql.SQL("vector({})").format(sql.Literal(dims))
    return sql.SQL("""
        vec AS MATERIALIZED (
            SELECT c.file_id, c.seq, c.embedding::{cast} <=> %(vector)s::{cast} AS distance
            FROM file_chunks c
            WHERE {scope} AND c.dims = {dims}
            ORDER BY c.embedding::{cast} <=> %(vector)s::{cast}
            LIMIT %(candidates)s),
        vec_ranked AS (
            SELECT file_id, seq, distance, row_number() OVER (ORDER BY distance, file_id, seq) AS r FROM vec)
    """).format(cast=cast, scope=scope_sql, dims=sql.Literal(dims))


def _text_side(scope_sql: sql.Composable) -> sql.Composable:
    # The chunks matching every term (websearch syntax: "quoted phrases", OR, -not); only when none
    # does, those matching any term, so an exact code or name is never outvoted by common words.
    # Ranking reads every match, so each side ranks at most `MAX_TEXT_MATCHES` of them: terms that
    # match more chunks than that say little, and the vector side carries such a query.
    return sql.SQL("""
        q AS (SELECT websearch_to_tsquery('english', %(query)s) AS every,
                     replace(plainto_tsquery('english', %(query)s)::text, ' & ', ' | ')::tsquery AS some),
        fts_every AS MATERIALIZED (
            SELECT m.file_id, m.seq, ts_rank_cd(m.tsv, q.every) AS rank
            FROM (SELECT c.file_id, c.seq, c.tsv FROM file_chunks c, q
                  WHERE {scope} AND c.tsv @@ q.every LIMIT %(text_matches)s) m, q
            ORDER BY rank DESC
            LIMIT %(candidates)s),
        fts AS (
            SELECT * FROM fts_every
            UNION ALL
            (SELECT m.file_id, m.seq, ts_rank_cd(m.tsv, q.some) AS rank
             FROM (SELECT c.file_id, c.seq, c.tsv FROM file_chunks c, q
                   WHERE {scope} AND c.tsv @@ q.some AND NOT EXISTS (SELECT 1 FROM fts_every)
                   LIMIT %(text_matches)s) m, q
             ORDER BY rank DESC
             LIMIT %(candidates)s)),
        fts_ranked AS (
            SELECT file_id, seq, rank, row_number() OVER (ORDER BY rank DESC, file_id, seq) AS r FROM fts)
    """).format(scope=scope_sql)


_EMPTY_VEC = sql.SQL("""vec_ranked AS (SELECT NULL::text AS file_id, NULL::int AS seq, NULL::float8 AS distance,
                                             NULL::bigint AS r WHERE false)""")
_EMPTY_FTS = sql.SQL("""fts_ranked AS (SELECT NULL::text AS file_id, NULL::int AS seq, NULL::float4 AS rank,
                                             NULL::bigint AS r WHERE false)""")


async def search(pool: AsyncConnectionPool, scope: Scope, *, query: str, vector: list[float] | None, top_k: int,
                 mode: SearchMode = "hybrid", min_score: float = 0.0) -> list[Hit]:
    """The `top_k` best chunks in `scope` for `query` (and its embedding `vector`, for hybrid and vector)."""
    if mode != "text" and vector is None:
        raise SwitchyardError("a vector search needs the query's embedding")
    candidates = min(MAX_CANDIDATES, max(MIN_CANDIDATES, 4 * top_k))
    scope_sql, params = _scope_sql(scope)
    params |= {"query": query, "candidates": candidates, "top": top_k, "text_matches": MAX_TEXT_MATCHES,
               "vector": vector_literal(vector) if vector is not None else None}
    sides = [
        _vector_side(len(vector), scope_sql) if vector is not None and mode != "text" else _EMPTY_VEC,
        _text_side(scope_sql) if mode != "vector" else _EMPTY_FTS,
    ]
    score = {
        # Scaled so that first on both sides is 1.
        "hybrid": sql.SQL("(coalesce(1.0 / ({k} + v.r), 0) + coalesce(1.0 / ({k} + t.r), 0)) * ({k} + 1) / 2.0")
        .format(k=sql.Literal(RRF_K)),
        "vector": sql.SQL("1 - v.distance"),
        "text": sql.SQL("t.rank"),
    }[mode]
    store_attributes = (sql.SQL("(SELECT vsf.attributes FROM vector_store_files vsf WHERE vsf.vector_store_id = "
                                "%(store)s AND vsf.file_id = c.file_id)") if scope.vector_store_id is not None
                        else sql.SQL("'{}'::jsonb"))
    query_sql = sql.SQL("""
        WITH {sides},
        fused AS (
            SELECT coalesce(v.file_id, t.file_id) AS file_id, coalesce(v.seq, t.seq) AS seq,
                   {score} AS score, 1 - v.distance AS similarity, v.r AS vector_rank, t.r AS text_rank
            FROM vec_ranked v FULL JOIN fts_ranked t ON t.file_id = v.file_id AND t.seq = v.seq)
        SELECT f.file_id, fi.filename, f.seq AS index, c.content AS text, c.page, c.page_end, c.char_start,
               c.char_end, f.score::float8 AS score, f.similarity::float8 AS similarity, f.vector_rank::int,
               f.text_rank::int, {attributes} AS attributes
        FROM fused f
        JOIN file_chunks c ON c.file_id = f.file_id AND c.seq = f.seq
        JOIN files fi ON fi.id = f.file_id
        WHERE f.score >= %(min_score)s
        ORDER BY f.score DESC, f.vector_rank NULLS LAST, f.text_rank NULLS LAST, f.file_id, f.seq
        LIMIT %(top)s
    """).format(sides=sql.SQL(",").join(sides), score=score, attributes=store_attributes)
    params["min_score"] = min_score
    async with pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # HNSW scans past chunks the owner filter drops, until enough candidates pass (pgvector >= 0.8).
        await cur.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        await cur.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(max(MIN_EF_SEARCH, candidates))))
        await cur.execute(query_sql, params)
        rows = await cur.fetchall()
    return [Hit(**r) for r in rows]
