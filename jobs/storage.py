"""Where the bytes of files live: one `FileStorage` protocol, on local disk or in an object store.

    FileStorage        put (streamed, atomic) · get (streamed) · delete (idempotent)
    ├── LocalStorage   a directory (`<data_dir>/files` by default): write a temp file, then rename it
    └── ObjectStorage  obstore: S3-compatible (`s3://bucket/prefix`) or in-process memory (`memory://`)

Neither side ever holds a whole file: `put` consumes an async iterator of
chunks, `get` returns one. A `put` that fails half-way leaves nothing under
its key — a reader sees the whole object or none.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import anyio
import obstore
from obstore.exceptions import NotFoundError
from obstore.store import MemoryStore, ObjectStore, S3Store

from jobs.errors import FileNotFound
from jobs.settings import Settings

#: Size of the chunks `get` yields (and of local disk writes).
CHUNK_BYTES = 1024 * 1024
#: Multipart parts of an object-store upload: S3's 5 MiB minimum; at most `_PUT_CONCURRENCY` are in flight,
#: so an upload holds about 10 MiB of memory whatever the file's size.
_PART_BYTES = 5 * 1024 * 1024
_PUT_CONCURRENCY = 2


class FileStorage(Protocol):
    """Streams bytes in and out under keys (`<owner>/<file id>`); a seam for tests and new backends."""

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        """Store everything `chunks` yields under `key`, atomically: if it raises, nothing is stored."""
        ...

    async def get(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of about `CHUNK_BYTES`; `FileNotFound` when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing one that is not there is fine."""
        ...


class LocalStorage:
    """Files in a directory on local disk (one process or several on one host, or a shared volume)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        """Write to a hidden temp file beside the target, flush it to disk, then rename it into place."""
        path = self._path(key)
        await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        temp = anyio.Path(path.parent / f".{path.name}.{uuid.uuid4().hex}.part")
        try:
            async with await anyio.open_file(temp, "wb") as out:
                async for block in _blocks(chunks, CHUNK_BYTES):
                    await out.write(block)
                await out.flush()
                await anyio.to_thread.run_sync(os.fsync, out.wrapped.fileno())
            await temp.rename(path)  # atomic on POSIX: readers see the old state or the whole file
        except BaseException:
            with anyio.CancelScope(shield=True):
                await temp.unlink(missing_ok=True)
            raise

    async def get(self, key: str) -> AsyncIterator[bytes]:
        """The file's bytes, read in a worker thread chunk by chunk."""
        try:
            handle = await anyio.open_file(self._path(key), "rb")
        except FileNotFoundError:
            raise FileNotFound(f"stored object {key!r} is missing") from None
        return _read(handle)

    async def delete(self, key: str) -> None:
        """Unlink the file, if it is there."""
        await anyio.Path(self._path(key)).unlink(missing_ok=True)


class ObjectStorage:
    """An object store through obstore: S3 and S3-compatible servers (MinIO, R2, ...), or memory."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"ObjectStorage({self.store!r})"

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> None:
        """A multipart upload, completed only after the last chunk (aborted if `chunks` raises)."""
        await obstore.put_async(self.store, key, chunks, use_multipart=True, chunk_size=_PART_BYTES,
                                max_concurrency=_PUT_CONCURRENCY)

    async def get(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, streamed from the store."""
        try:
            result = await obstore.get_async(self.store, key)
        except (NotFoundError, FileNotFoundError):
            raise FileNotFound(f"stored object {key!r} is missing") from None
        return _stream(result.stream(min_chunk_size=CHUNK_BYTES))

    async def delete(self, key: str) -> None:
        """Delete the object (S3 deletes are idempotent already; memory stores are made so)."""
        with contextlib.suppress(NotFoundError, FileNotFoundError):
            await obstore.delete_async(self.store, key)


def storage_from(settings: Settings) -> FileStorage:
    """The storage `settings.storage_url` names: empty for `<data_dir>/files`, `file:///dir`, `s3://…`, `memory://`."""
    url = settings.storage_url.strip()
    if not url:
        return LocalStorage(Path(settings.data_dir) / "files")
    scheme, _, rest = url.partition("://")
    match scheme:
        case "file":
            return LocalStorage(Path(rest))
        case "memory":
            # One process's memory: for tests and single-process tools, never for an API plus workers.
            return ObjectStorage(MemoryStore())
        case "s3":
            return ObjectStorage(_s3_store(url, settings))
    raise SystemExit(f"SWITCHYARD_STORAGE_URL {url!r}: use s3://bucket/prefix, memory://, file:///dir or nothing")


def _s3_store(url: str, settings: Settings) -> S3Store:
    """An S3 store; the `s3_*` settings that are set override obstore's usual AWS environment chain."""
    config: dict[str, Any] = {name: value for name, value in (
        ("endpoint", settings.s3_endpoint), ("region", settings.s3_region),
        ("access_key_id", settings.s3_access_key_id), ("secret_access_key", settings.s3_secret_access_key),
    ) if value}
    # A local S3-compatible server (MinIO, moto) usually speaks plain HTTP.
    client_options: dict[str, Any] = {"allow_http": settings.s3_endpoint.startswith("http://")}
    return S3Store.from_url(url, config=config, client_options=client_options)  # type: ignore[arg-type]


async def _blocks(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """`chunks` regrouped into blocks of at least `size` bytes (the last may be smaller): fewer thread hops."""
    pending: list[bytes] = []
    held = 0
    async for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


async def _read(handle: anyio.AsyncFile[bytes]) -> AsyncIterator[bytes]:
    """A local file's chunks; the file is closed when the reader is done or goes away."""
    async with handle:
        while chunk := await handle.read(CHUNK_BYTES):
            yield chunk


async def _stream(stream: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    """An obstore byte stream as `bytes` chunks of at most `CHUNK_BYTES` (a memory store hands out one buffer)."""
    async for chunk in stream:
        view = memoryview(chunk)
        for start in range(0, len(view), CHUNK_BYTES):
            yield bytes(view[start:start + CHUNK_BYTES])

