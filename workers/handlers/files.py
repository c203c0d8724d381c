"""The `file.process` job: make one uploaded file searchable.

    read the bytes ─► extract (type sniffed from the content) ─► chunk by tokens ─► embed in batches
    ─► the chunks and `processed` written in the job's ending transaction (`knowledge.store_chunks`)

Progress is published as `progress` events (`extracting`, `chunking`,
`embedding` with `done`/`total` chunks, `storing`). Extraction and chunking
run in a thread, so a big PDF never stalls the worker's other jobs. A file
that cannot be read (corrupt, encrypted, disguised, too many pages or
chunks) fails the job with its own code, and the file shows `error` with the
reason; its previous chunks, if any, stay as they were.
"""

from __future__ import annotations

import anyio

from jobs import credits, files, knowledge, store
from jobs.errors import FileHasNoText, FileNotFound
from jobs.kinds import EmbeddingInput, FileProcessInput, FileProcessResult
from jobs.states import EventType
from workers.handlers.base import Outcome, publisher
from workers.routing import EmbedRun
from workers.runtime import Runtime


async def _read(rt: Runtime, row: files.FileRow) -> bytes:
    return b"".join([chunk async for chunk in await files.read_file(rt, row)])


async def run(rt: Runtime, job: store.JobRow, input: FileProcessInput, attempts: list[store.AttemptRow]) -> Outcome:
    """Extract, chunk and embed the file; its chunks are stored when the job succeeds."""
    # Imported here: pypdf, python-docx and the tokenizer tables cost ~85 MB, which only processes
    # that really run file jobs should pay (every worker imports every handler).
    from jobs import chunking, extract

    publish = publisher(rt, job)
    settings = rt.settings
    row = await files.get_file(rt.pool, input.file_id, job.owner_id)
    if row is None:
        raise FileNotFound(f"file {input.file_id!r} was deleted before it could be processed")

    await publish(EventType.PROGRESS, {"stage": "extracting"})
    data = await _read(rt, row)
    extracted = await anyio.to_thread.run_sync(
        lambda: extract.extract(data, row.filename, max_pages=settings.max_file_pages))
    await publish(EventType.PROGRESS, {"stage": "chunking", "type": extracted.type, "pages": extracted.page_count,
                                       "characters": len(extracted.text)})
    chunks = await anyio.to_thread.run_sync(lambda: chunking.chunk(
        extracted, chunk_tokens=input.chunk_tokens, overlap_tokens=input.overlap_tokens,
        max_chunks=settings.max_file_chunks))
    if not chunks:
        raise FileHasNoText(f"{row.filename!r} holds no text to index")

    async def progress(done: int, total: int) -> None:
        await publish(EventType.PROGRESS, {"stage": "embedding", "done": done, "total": total})

    await progress(0, len(chunks))
    texts = EmbeddingInput(model=input.model, input=[c.text for c in chunks], fallback=input.fallback)
    target, outcome = await EmbedRun(rt, job, texts, attempts, publish, batch=settings.file_embed_batch,
                                     concurrency=settings.embed_concurrency, progress=progress).run()
    dimensions = len(outcome.vectors[0])
    await knowledge.ensure_index(rt.pool, dimensions)
    await publish(EventType.PROGRESS, {"stage": "storing", "chunks": len(chunks)})
    summary = knowledge.ProcessedSummary(
        type=extracted.type, pages=extracted.page_count, characters=len(extracted.text), chunks=len(chunks),
        tokens=sum(c.tokens for c in chunks), model=input.model, dimensions=dimensions)
    result = FileProcessResult(
        file_id=row.id, type=extracted.type, pages=extracted.page_count, characters=len(extracted.text),
        chunks=len(chunks), dimensions=dimensions, model=input.model, provider=target.provider,
        provider_model=target.model, usage=outcome.usage)
    return Outcome(
        result,
        charge=credits.cost(outcome.usage.prompt_tokens, 0, target.input_price, 0),
        effect=knowledge.store_chunks(job.id, row.id, job.owner_id, chunks, outcome.vectors, summary),
    )
