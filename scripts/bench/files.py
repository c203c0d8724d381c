"""Benchmark: file processing (extract → chunk → embed → store) and search at 100k chunks.

    .venv/bin/python -m scripts.bench.files [--mb 10] [--rounds 3] [--chunks 100000] [--queries 200]

Four parts, each against a baseline measured in the same run:

1. **Extraction and chunking, in process** (one thread): a generated ~`--mb` MB
   (of text) set of PDF, DOCX, HTML, Markdown and plain-text documents.
   Extraction MB/s per type against the bare library call (pypdf's
   `extract_text`, python-docx's paragraphs, selectolax's `body.text()`,
   `bytes.decode`), so the cost of sniffing, normalising, page spans and
   boilerplate removal shows; chunks/s of `jobs.chunking.chunk` against the
   bare splitter (`chunk_indices`, no exact token counts, no page lookup).
   Median of `--rounds` rounds.
2. **The platform end to end**: the same documents uploaded through the API
   (`openai` SDK, purpose `assistants`) and processed by a `files` pool
   (2 processes × 4 threads) against the simulator; wall time, MB/s and
   chunks/s, each job's stages from its `progress` events, and embedding
   throughput against the same chunk texts embedded straight at the simulator
   with the `openai` SDK (same batch size and concurrency).
3. **Search at `--chunks` chunks** of one user (plus 10% as many of another):
   pgvector HNSW top-10 against an exact scan (recall@10 and speed-up), and
   the platform's `vector` and `hybrid` searches (`jobs.knowledge.search`),
   p50/p99 over `--queries` queries, interleaved; then `POST /v1/search`
   through the API (which embeds the query as a job).
4. **Ranking quality** on the labelled set of `scripts/retrieval_set.py`:
   MRR@10, hit@1 and recall@5 of `vector`, `text` and `hybrid`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import multiprocessing
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import docx
import httpx
import numpy as np
import openai
import psycopg
from fpdf import FPDF
from psycopg_pool import AsyncConnectionPool
from pypdf import PdfReader
from selectolax.lexbor import LexborHTMLParser
from semantic_text_splitter import TextSplitter
from tqdm import tqdm

from jobs import chunking, extract, knowledge
from scripts import retrieval_set
from scripts.bench.kit import BenchStack, bench_stack, new_user, percentile
from scripts.embedded import free_port
from scripts.procs import start_api, start_maintenance, start_worker
from scripts.simulator.text import embed

TYPES = ("pdf", "docx", "html", "md", "txt")
DIMS = 256
#: The embedding calls of part 2's baseline: the platform's defaults (`SWITCHYARD_FILE_EMBED_BATCH`,
#: `SWITCHYARD_EMBED_CONCURRENCY`).
EMBED_BATCH, EMBED_CONCURRENCY = 256, 4

# --- A corpus with a real vocabulary's shape --------------------------------------------------------------------

_SYLLABLES = ("ka", "lo", "ri", "ten", "mar", "vo", "sel", "an", "dor", "pi", "qua", "ber", "lin", "os", "tri",
              "gan", "fe", "mu", "sto", "ral", "ne", "zo", "chi", "par", "wen", "del", "us", "im", "ro", "ta")


class Vocabulary:
    """4,000 made-up words drawn with Zipf's law (a few very common, most rare), like English text."""

    def __init__(self, seed: int = 1, size: int = 4000, draws: int | None = None) -> None:
        """The words come from `seed`; the sentences drawn from them from `draws` (default `seed + 1`)."""
        rng = random.Random(seed)
        words: set[str] = set()
        while len(words) < size:
            words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
        self.words = sorted(words, key=lambda w: (len(w), w))
        self.weights = [1 / (rank + 1) ** 1.07 for rank in range(size)]
        self.rng = random.Random(seed + 1 if draws is None else draws)

    def sentence(self) -> str:
        words = self.rng.choices(self.words, self.weights, k=self.rng.randint(8, 22))
        return " ".join(words).capitalize() + "."

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(3, 7)))

    def paragraphs(self, chars: int) -> list[str]:
        out: list[str] = []
        size = 0
        while size < chars:
            out.append(self.paragraph())
            size += len(out[-1]) + 2
        return out


def render(kind: str, title: str, paragraphs: list[str]) -> bytes:
    """One document of `kind` holding `paragraphs` (a heading every 8)."""
    if kind == "txt":
        return (title + "\n\n" + "\n\n".join(paragraphs)).encode()
    if kind == "md":
        parts = [f"# {title}"]
        for i, p in enumerate(paragraphs):
            if i % 8 == 0:
                parts.append(f"## Section {i // 8 + 1}")
            parts.append(p)
        return "\n\n".join(parts).encode()
    if kind == "html":
        body = "".join((f"<h2>Section {i // 8 + 1}</h2>" if i % 8 == 0 else "") + f"<p>{p}</p>"
                       for i, p in enumerate(paragraphs))
        nav = "".join(f'<a href="/p{i}">Link {i}</a> ' for i in range(30))
        return (f"<!doctype html><html><head><title>{title}</title><script>var x = 1;</script></head><body>"
                f"<header><nav>{nav}</nav></header><main><h1>{title}</h1>{body}</main>"
                f"<footer>Copyright, terms, privacy</footer></body></html>").encode()
    if kind == "docx":
        document = docx.Document()
        document.add_heading(title, level=1)
        for i, p in enumerate(paragraphs):
            if i % 8 == 0:
                document.add_heading(f"Section {i // 8 + 1}", level=2)
            document.add_paragraph(p)
        out = io.BytesIO()
        document.save(out)
        return out.getvalue()
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    pdf.set_title(title)
    pdf.add_page()
    for p in paragraphs:
        pdf.multi_cell(0, 6, p)
        pdf.ln(3)
    return bytes(pdf.output())


def corpus(megabytes: float, per_type: int = 10) -> list[tuple[str, str, bytes]]:
    """(name, type, bytes) of `per_type` documents of each type, `megabytes` MB of text in all."""
    vocabulary = Vocabulary()
    chars = int(megabytes * 1e6 / len(TYPES) / per_type)
    docs = []
    for kind in TYPES:
        for i in range(per_type):
            title = f"{kind.upper()} report {i + 1}"
            docs.append((f"doc-{kind}-{i + 1}.{kind}", kind, render(kind, title, vocabulary.paragraphs(chars))))
    return docs


# --- Part 1: extraction and chunking in process -----------------------------------------------------------------


def bare_extract(kind: str, data: bytes) -> str:
    """The library call alone: what the extraction baseline does."""
    if kind == "pdf":
        return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    if kind == "docx":
        return "\n".join(p.text for p in docx.Document(io.BytesIO(data)).paragraphs)
    if kind == "html":
        body = LexborHTMLParser(data.decode()).body
        return body.text() if body is not None else ""
    return data.decode()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def part_extraction(docs: list[tuple[str, str, bytes]], rounds: int) -> list[extract.Extracted]:
    """Print extraction MB/s per type (ours vs the bare library) and chunks/s (ours vs the bare splitter)."""
    ours: dict[str, list[float]] = defaultdict(list)
    bare: dict[str, list[float]] = defaultdict(list)
    chunk_s: list[float] = []
    split_s: list[float] = []
    extracted: list[extract.Extracted] = []
    chunks = 0
    splitter = TextSplitter.from_tiktoken_model(chunking.TOKENIZER_MODEL, capacity=512, overlap=64)
    for round_ in tqdm(range(rounds), desc="extract + chunk rounds", file=sys.stderr):
        seconds: dict[str, float] = defaultdict(float)
        bare_seconds: dict[str, float] = defaultdict(float)
        extracted = []
        for name, kind, data in docs:  # interleaved, document by document; which goes first alternates
            first = functools.partial(extract.extract, data, name)
            second = functools.partial(bare_extract, kind, data)
            if round_ % 2:
                b, _ = timed(second)
                s, e = timed(first)
            else:
                s, e = timed(first)
                b, _ = timed(second)
            seconds[kind] += s
            bare_seconds[kind] += b
            extracted.append(e)
        for kind in TYPES:
            ours[kind].append(seconds[kind])
            bare[kind].append(bare_seconds[kind])
        started = time.perf_counter()
        chunks = sum(len(chunking.chunk(e)) for e in extracted)
        chunk_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        for e in extracted:
            splitter.chunk_indices(e.text)
        split_s.append(time.perf_counter() - started)

    med = statistics.median
    print(f"\n## 1. Extraction and chunking in one thread (median of {rounds} rounds)\n")
    print("| type | files | MB (file) | MB (text) | ours MB/s | bare library MB/s | ours / bare time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total_bytes = total_s = total_bare = 0.0
    for kind in TYPES:
        size = sum(len(d) for _, k, d in docs if k == kind)
        text = sum(len(e.text) for e, (_, k, _d) in zip(extracted, docs, strict=True) if k == kind)
        o, b = med(ours[kind]), med(bare[kind])
        total_bytes, total_s, total_bare = total_bytes + size, total_s + o, total_bare + b
        print(f"| {kind} | {sum(k == kind for _, k, _d in docs)} | {size / 1e6:.2f} | {text / 1e6:.2f} "
              f"| {size / 1e6 / o:.1f} | {size / 1e6 / b:.1f} | {o / b:.2f}× |")
    print(f"| **all** | {len(docs)} | {total_bytes / 1e6:.2f} | {sum(len(e.text) for e in extracted) / 1e6:.2f} "
          f"| **{total_bytes / 1e6 / total_s:.1f}** | {total_bytes / 1e6 / total_bare:.1f} "
          f"| {total_s / total_bare:.2f}× |")
    print(f"\nChunking (512 tokens, 64 overlap): {chunks:,} chunks in {med(chunk_s):.2f} s = "
          f"**{chunks / med(chunk_s):,.0f} chunks/s** ({sum(len(e.text) for e in extracted) / 1e6 / med(chunk_s):.1f}"
          f" MB/s of text); the bare splitter: {med(split_s):.2f} s = {chunks / med(split_s):,.0f} chunks/s; "
          f"ours / bare time {med(chunk_s) / med(split_s):.2f}× (exact token counts and page spans).")
    return extracted


# --- Part 2: through the platform -------------------------------------------------------------------------------


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def _events(client: httpx.AsyncClient, job_id: str) -> list[dict[str, Any]]:
    events = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    return events


def _stages(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds of each stage of one `file.process` job, from its events."""
    marks: dict[str, float] = {}
    for e in events:
        if e["type"] == "started":
            marks.setdefault("started", _at(e["at"]))
        elif e["type"] == "progress":
            marks.setdefault(e["data"]["stage"], _at(e["at"]))
        elif e["type"] == "succeeded":
            marks["succeeded"] = _at(e["at"])
    return {"extract": marks["chunking"] - marks["extracting"], "chunk": marks["embedding"] - marks["chunking"],
            "embed": marks["storing"] - marks["embedding"], "store": marks["succeeded"] - marks["storing"]}


async def process_all(key: str, api_url: str, docs: list[tuple[str, str, bytes]]) -> dict[str, Any]:
    """Upload every document and wait until all are processed; wall time, stages, chunk count."""
    sdk = openai.AsyncOpenAI(base_url=api_url + "/v1", api_key=key, max_retries=0, timeout=600)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=600) as client:
        started = time.perf_counter()
        uploaded = [await sdk.files.create(file=(name, data), purpose="assistants") for name, _, data in docs]
        upload_s = time.perf_counter() - started
        pending = {f.id for f in uploaded}
        rows: dict[str, dict[str, Any]] = {}
        with tqdm(total=len(pending), desc="processed", unit="file", file=sys.stderr) as bar:
            while pending:
                for file_id in list(pending):
                    row = (await client.get(f"/v1/files/{file_id}")).json()
                    if row["status"] != "processing":
                        pending.discard(file_id)
                        rows[file_id] = row
                        bar.update()
                await asyncio.sleep(0.2)
        wall = time.perf_counter() - started
        failed = [r for r in rows.values() if r["status"] != "processed"]
        assert not failed, failed[:3]
        stages = [_stages(await _events(client, r["process_job_id"])) for r in rows.values()]
    await sdk.close()
    return {"upload_s": upload_s, "wall_s": wall, "stages": stages,
            "chunks": sum(r["processed"]["chunks"] for r in rows.values()),
            "tokens": sum(r["processed"]["tokens"] for r in rows.values())}


async def bare_pipeline(database_url: str, simulator_url: str, docs: list[tuple[str, str, bytes]]) -> dict[str, float]:
    """The baseline: the same work in one plain process, no queue, no jobs, no events, no credits.

    Each document is extracted and chunked (the same functions), its chunks embedded straight at the simulator
    (the `openai` SDK, the platform's batch size and concurrency) and COPYed into a scratch copy of
    `file_chunks` with the same indexes (HNSW included). Seconds of each stage, and the wall time.
    """
    sdk = openai.AsyncOpenAI(base_url=simulator_url + "/v1", api_key="sim", max_retries=0, timeout=600)
    slots = asyncio.Semaphore(EMBED_CONCURRENCY)

    async def call(batch: list[str]) -> list[list[float]]:
        async with slots:
            response = await sdk.embeddings.create(model="sim-embed", input=batch, dimensions=DIMS)
        return [item.embedding for item in response.data]

    seconds: dict[str, float] = defaultdict(float)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS bench_chunks")
        await conn.execute("CREATE TABLE bench_chunks (LIKE file_chunks INCLUDING ALL)")
        await conn.execute("CREATE INDEX ON bench_chunks USING hnsw ((embedding::vector(256)) vector_cosine_ops) "
                           "WHERE dims = 256")
        wall = time.perf_counter()
        for name, _, data in docs:
            started = time.perf_counter()
            extracted = await asyncio.to_thread(extract.extract, data, name)
            seconds["extract"] += time.perf_counter() - started
            started = time.perf_counter()
            chunks = await asyncio.to_thread(chunking.chunk, extracted)
            seconds["chunk"] += time.perf_counter() - started
            started = time.perf_counter()
            texts = [c.text for c in chunks]
            batches = await asyncio.gather(*(call(texts[i:i + EMBED_BATCH]) for i in range(0, len(texts), EMBED_BATCH)))
            vectors = [v for batch in batches for v in batch]
            seconds["embed"] += time.perf_counter() - started
            started = time.perf_counter()
            async with conn.transaction(), conn.cursor().copy(
                    "COPY bench_chunks (file_id, seq, owner_id, page, page_end, char_start, char_end, tokens, "
                    "content, dims, embedding) FROM STDIN") as copy:
                owner = uuid.uuid4()
                for chunk, vector in zip(chunks, vectors, strict=True):
                    await copy.write_row((name, chunk.seq, owner, chunk.page, chunk.page_end, chunk.char_start,
                                          chunk.char_end, chunk.tokens, chunk.text, DIMS,
                                          knowledge.vector_literal(vector)))
            seconds["store"] += time.perf_counter() - started
        seconds["wall"] = time.perf_counter() - wall
        await conn.execute("DROP TABLE bench_chunks")
    await sdk.close()
    return seconds


async def part_platform(stack: BenchStack, api_url: str, docs: list[tuple[str, str, bytes]], rounds: int) -> None:
    platform: list[dict[str, Any]] = []
    bare: list[dict[str, float]] = []
    for _ in range(rounds):  # interleaved: the baseline, then the platform, each round
        bare.append(await bare_pipeline(stack.env["DATABASE_URL"], stack.env["SIMULATOR_URL"], docs))
        key, _ = await new_user(stack.env["DATABASE_URL"])
        platform.append(await process_all(key, api_url, docs))
    med = statistics.median
    size = sum(len(d) for _, _, d in docs)
    chunks = platform[0]["chunks"]
    wall, bare_wall = med(p["wall_s"] for p in platform), med(b["wall"] for b in bare)
    print(f"\n## 2. Through the platform: {len(docs)} files, {size / 1e6:.1f} MB, `files` pool of 2 processes × "
          f"4 threads (median of {rounds} interleaved rounds)\n")
    print(f"Upload → every file `processed`: **{wall:.1f} s** = **{size / 1e6 / wall:.2f} MB/s**, "
          f"**{chunks / wall:,.0f} chunks/s** embedded and stored ({chunks:,} chunks, {platform[0]['tokens']:,} "
          f"tokens; uploads alone {med(p['upload_s'] for p in platform):.1f} s).  ")
    print(f"Baseline, the same work in one plain process (no queue, jobs, events or credits): {bare_wall:.1f} s = "
          f"{size / 1e6 / bare_wall:.2f} MB/s, {chunks / bare_wall:,.0f} chunks/s. **Platform / baseline time: "
          f"{wall / bare_wall:.2f}×.**\n")
    print("| stage | baseline s (one process, in all) | platform: median s per file | p99 s per file | "
          "sum s over files |")
    print("|---|---:|---:|---:|---:|")
    stages = [s for p in platform[:1] for s in p["stages"]]
    for stage in ("extract", "chunk", "embed", "store"):
        values = [s[stage] for s in stages]
        print(f"| {stage} | {med(b[stage] for b in bare):.1f} | {med(values):.3f} | {percentile(values, 99):.3f} "
              f"| {sum(values):.1f} |")
    embed_s = med(b["embed"] for b in bare)
    print(f"\nEmbedding throughput: {chunks / embed_s:,.0f} chunks/s straight at the simulator (batches of "
          f"{EMBED_BATCH}, {EMBED_CONCURRENCY} at a time). Platform stages come from each job's `progress` "
          "events; up to 8 jobs run at once on 2 cores, so per-file stages overlap and their sums exceed the wall "
          "time.")


# --- Part 3: search at 100k chunks ------------------------------------------------------------------------------

#: Dimensions of the latent space the `structured` vectors are drawn from: sentence embeddings have a low
#: intrinsic dimension, which is what lets graph indexes like HNSW reach high recall on them.
LATENT_DIMS = 32


class Dataset:
    """Chunk texts with their vectors for two owners (`sizes`), and a way to make queries near a chunk."""

    def __init__(self, kind: str, owners: list[uuid.UUID], sizes: list[int]) -> None:
        self.kind = kind
        self.owners = owners
        self.texts = [synthetic_chunks(n, seed=11 + i) for i, n in enumerate(sizes)]
        self.rng = random.Random(5)
        if kind == "structured":
            generator = np.random.default_rng(7)
            self.mixing = generator.standard_normal((LATENT_DIMS, DIMS))
            self.latent = [generator.standard_normal((n, LATENT_DIMS)) for n in sizes]
            self.vectors = [[knowledge.vector_literal(v) for v in self._project(z)] for z in self.latent]
        else:
            with multiprocessing.get_context("fork").Pool(2) as processes:
                self.vectors = [processes.map(_embed_row, texts, chunksize=2000) for texts in self.texts]

    def _project(self, latent: Any) -> Any:
        vectors = latent @ self.mixing + 0.05 * np.random.default_rng(8).standard_normal((len(latent), DIMS))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def query(self, owner: int) -> tuple[str, list[float]]:
        """Five words of one of the owner's chunks, and a vector near that chunk's."""
        i = self.rng.randrange(len(self.texts[owner]))
        words = self.texts[owner][i].rstrip(".").lower().split()
        text = " ".join(self.rng.sample(words, min(5, len(words))))
        if self.kind == "structured":
            near = self.latent[owner][i] + 0.3 * np.random.default_rng(self.rng.randrange(1 << 30)).standard_normal(
                LATENT_DIMS)
            return text, [float(x) for x in self._project(near[None, :])[0]]
        return text, embed(text, DIMS)


def _embed_row(text: str) -> str:
    return knowledge.vector_literal(embed(text, DIMS))


def synthetic_chunks(count: int, seed: int) -> list[str]:
    vocabulary = Vocabulary(seed=1, draws=seed)
    return [" ".join(vocabulary.sentence() for _ in range(4)) for _ in range(count)]


def load(database_url: str, data: Dataset, per_file: int = 1000) -> dict[str, float]:
    """Replace the benchmark's chunks with `data`'s and build the HNSW index; seconds of each step."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP INDEX IF EXISTS file_chunks_hnsw_256")
        conn.execute("DELETE FROM files WHERE id LIKE 'file-bench%'")
    started = time.perf_counter()
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        for owner, texts, vectors in zip(data.owners, data.texts, data.vectors, strict=True):
            file_ids = [f"file-bench{uuid.uuid4().hex}" for _ in range(0, len(texts), per_file)]
            with cur.copy("COPY files (id, owner_id, filename, purpose, bytes, sha256, storage_key, status) "
                          "FROM STDIN") as copy:
                for i, file_id in enumerate(file_ids):
                    copy.write_row((file_id, owner, f"synthetic-{i}.txt", "assistants", 1, "-", "-", "processed"))
            with cur.copy("COPY file_chunks (file_id, seq, owner_id, char_start, char_end, tokens, content, dims, "
                          "embedding) FROM STDIN") as copy:
                for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
                    copy.write_row((file_ids[i // per_file], i % per_file, owner, 0, len(text), len(text) // 4,
                                    text, DIMS, vector))
    copy_s = time.perf_counter() - started
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        started = time.perf_counter()
        conn.execute("CREATE INDEX file_chunks_hnsw_256 ON file_chunks USING hnsw ((embedding::vector(256)) "
                     "vector_cosine_ops) WHERE dims = 256")
        index_s = time.perf_counter() - started
        conn.execute("ANALYZE file_chunks")
        plan = "\n".join(str(r[0]) for r in conn.execute("EXPLAIN " + _HNSW, (data.owners[0], data.vectors[0][0])))
    assert "file_chunks_hnsw_256" in plan, plan
    return {"copy_s": copy_s, "index_s": index_s}


_EXACT = """SELECT file_id, seq FROM file_chunks WHERE owner_id = %s AND dims = 256
            ORDER BY embedding <=> %s::vector LIMIT 10"""
#: `hnsw.ef_search` values the bare HNSW query is measured with (pgvector's default is 40).
EF_SEARCH = (40, 100, 200)
_HNSW = """SELECT file_id, seq FROM file_chunks WHERE owner_id = %s AND dims = 256
           ORDER BY embedding::vector(256) <=> %s::vector(256) LIMIT 10"""


async def _hnsw(conn: psycopg.AsyncConnection[Any], who: uuid.UUID, literal: str, ef: int) -> psycopg.AsyncCursor[Any]:
    await conn.execute(f"SET hnsw.ef_search = {ef}")
    return await conn.execute(_HNSW, (who, literal))


Measured = tuple[str, float, float, float | None, float]


async def measure(pool: AsyncConnectionPool, data: Dataset, owner: int, queries: int) -> list[Measured]:
    """Each query path's latencies (ms) and recall@10 against the exact scan, interleaved query by query."""
    who = data.owners[owner]
    times: dict[str, list[float]] = defaultdict(list)
    recalls: dict[str, list[float]] = defaultdict(list)
    names: list[str] = []
    async with pool.connection() as conn:
        await conn.execute("SET hnsw.iterative_scan = relaxed_order")
        for i in tqdm(range(queries + 20), desc=f"{data.kind} queries", file=sys.stderr):
            text, vector = data.query(owner)
            literal = knowledge.vector_literal(vector)
            scope = knowledge.Scope(owner_id=who)
            runs: list[tuple[str, Callable[[], Any]]] = [
                ("exact scan", functools.partial(conn.execute, _EXACT, (who, literal))),
                *((f"HNSW (bare SQL, ef_search {ef})", functools.partial(_hnsw, conn, who, literal, ef))
                  for ef in EF_SEARCH),
                ("`vector` search", functools.partial(knowledge.search, pool, scope, query=text, vector=vector,
                                                      top_k=10, mode="vector")),
                ("`hybrid` search", functools.partial(knowledge.search, pool, scope, query=text, vector=vector,
                                                      top_k=10, mode="hybrid")),
            ]
            names = [name for name, _ in runs]
            found: dict[str, set[tuple[str, int]]] = {}
            for name, run in runs if i % 2 else reversed(runs):  # which goes first alternates
                started = time.perf_counter()
                out = await run()
                elapsed = time.perf_counter() - started
                found[name] = set(await out.fetchall() if isinstance(out, psycopg.AsyncCursor)
                                  else [(h.file_id, h.index) for h in out])
                if i >= 20:  # the first 20 warm the caches
                    times[name].append(elapsed * 1000)
            if i >= 20:
                for name in names[1:-1]:  # hybrid is not meant to equal the vector top 10
                    recalls[name].append(len(found[name] & found["exact scan"]) / 10)
    exact = statistics.median(times["exact scan"])
    return [(name, statistics.median(times[name]), percentile(times[name], 99),
             statistics.fmean(recalls[name]) if name in recalls else None, exact / statistics.median(times[name]))
            for name in names]


async def part_search(stack: BenchStack, api_url: str, chunks: int, queries: int) -> None:
    database_url = stack.env["DATABASE_URL"]
    key, owner = await new_user(database_url)
    _, other = await new_user(database_url)
    print(f"\n## 3. Search at {chunks:,} chunks of one user (and {chunks // 10:,} of another in the same table), "
          f"{DIMS} dimensions, top 10\n")
    print("| vectors | whose chunks | query path | p50 ms | p99 ms | recall@10 vs exact | speed-up vs exact (p50) |")
    print("|---|---|---|---:|---:|---:|---:|")
    setups = []
    for kind in ("structured", "hashed"):
        print(f"{kind}: vectors...", file=sys.stderr)
        started = time.perf_counter()
        data = Dataset(kind, [owner, other], [chunks, chunks // 10])
        vectors_s = time.perf_counter() - started
        setups.append((kind, vectors_s, load(database_url, data)))
        pool = AsyncConnectionPool(database_url, min_size=1, max_size=2, open=False)
        await pool.open()
        try:
            for index, label in ((0, f"{chunks:,} (all theirs)"), (1, f"{chunks // 10:,} of {chunks * 11 // 10:,}")):
                for name, p50, p99, recall, speed in await measure(pool, data, index, queries):
                    print(f"| {kind} | {label} | {name} | {p50:.2f} | {p99:.2f} | "
                          f"{'—' if recall is None else f'{recall:.3f}'} | {speed:.1f}× |")
        finally:
            await pool.close()
        if kind == "structured":
            # Through the API: the query is embedded as a job, then searched.
            latencies = []
            async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"},
                                         timeout=60) as c:
                for i in range(70):
                    text, _ = data.query(0)
                    started = time.perf_counter()
                    response = await c.post("/v1/search", json={"query": text, "top_k": 10})
                    assert response.status_code == 200, response.text
                    if i >= 10:
                        latencies.append((time.perf_counter() - started) * 1000)
            api_line = (f"`POST /v1/search` (hybrid, top 10) over the user's {chunks:,} chunks, through the API with "
                        f"the query embedded as an `embedding` job: p50 {statistics.median(latencies):.1f} ms, "
                        f"p99 {percentile(latencies, 99):.1f} ms ({len(latencies)} sequential queries).")
    print()
    for kind, vectors_s, steps in setups:
        print(f"Set-up ({kind}): vectors {vectors_s:.1f} s, COPY {steps['copy_s']:.1f} s, HNSW build "
              f"{steps['index_s']:.1f} s (m 16, ef_construction 64, maintenance_work_mem 1GB).  ")
    print(f"\n{api_line}")


# --- Part 4: ranking quality ------------------------------------------------------------------------------------


async def part_quality(stack: BenchStack, api_url: str) -> None:
    key, _ = await new_user(stack.env["DATABASE_URL"])
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        names = {}
        jobs = []
        for name, text in retrieval_set.DOCUMENTS.items():
            row = (await c.post("/v1/files", files={"file": (name, text.encode())},
                                data={"purpose": "assistants"})).json()
            names[row["id"]] = name
            jobs.append(row["process_job_id"])
        for job in jobs:
            while (await c.get(f"/v1/jobs/{job}")).json()["status"] not in ("succeeded", "failed"):
                await asyncio.sleep(0.1)
        results = {}
        for mode in ("vector", "text", "hybrid"):
            async def rank(query: str, mode: str = mode) -> list[str]:
                hits = (await c.post("/v1/search", json={"query": query, "mode": mode, "top_k": 20})).json()["data"]
                return [names[h["file_id"]] for h in hits]
            results[mode] = await retrieval_set.evaluate(rank)
    cases = results["hybrid"]
    print(f"\n## 4. Ranking quality on the labelled set ({len(retrieval_set.DOCUMENTS)} documents, "
          f"{cases['all'].cases} queries: {cases['topic'].cases} topic, {cases['exact'].cases} exact-term)\n")
    print("| mode | MRR@10 (all) | hit@1 (all) | recall@5 (all) | MRR topic | MRR exact-term | hit@1 exact-term |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, m in results.items():
        print(f"| {mode} | {m['all'].mrr:.3f} | {m['all'].hit_at_1:.2f} | {m['all'].recall_at_5:.2f} "
              f"| {m['topic'].mrr:.3f} | {m['exact'].mrr:.3f} | {m['exact'].hit_at_1:.2f} |")


# --- Run --------------------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, stack: BenchStack) -> None:
    print(f"generating ~{args.mb} MB of documents...", file=sys.stderr)
    docs = corpus(args.mb)
    if "1" in args.parts:
        part_extraction(docs, args.rounds)
    port = free_port()
    procs = [start_api(stack.env, port, stack.log_dir), start_maintenance(stack.env, stack.log_dir),
             start_worker(stack.env, stack.log_dir, name="files", processes=2, threads=4,
                          queues=["files", "embeddings"])]
    api_url = f"http://127.0.0.1:{port}"
    try:
        if "2" in args.parts:
            await part_platform(stack, api_url, docs, max(2, args.rounds - 1))
        if "4" in args.parts:
            await part_quality(stack, api_url)
        if "3" in args.parts:
            await part_search(stack, api_url, args.chunks, args.queries)
    finally:
        for proc in procs:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=10, help="megabytes of text in the document set")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--parts", default="1234", help="which parts to run (digits)")
    args = parser.parse_args()
    with bench_stack(SWITCHYARD_KNOWLEDGE_EMBEDDING_MODEL="sim-embed") as stack:
        asyncio.run(bench(args, stack))


if __name__ == "__main__":
    main()
