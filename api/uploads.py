"""Streaming multipart/form-data uploads: parts are read from the body as it arrives, never buffered whole.

Litestar's form parsing reads the whole body first; a file upload instead
feeds `request.stream()` to python-multipart's push parser and hands the
`file` part's data on, chunk by chunk, to `jobs.files` (and so to storage).
The app-wide body limit (`SWITCHYARD_MAX_BODY_BYTES`, 1 MiB) is lifted on the
upload route and replaced by this module's own: `max_file_bytes` for the
file, plus `MULTIPART_OVERHEAD` for part headers and the other fields.

A refused upload is answered at once, mid-body; uvicorn then reads and drops
the rest of the body on the kept-alive connection, so a client that is still
sending gets to read the 413 instead of a connection reset.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from litestar import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from api.state import Services
from jobs import files, knowledge
from jobs.errors import FileTooLarge, InvalidUpload
from jobs.files import FileRow, StagedFile

#: Bytes a multipart body may carry beyond the file itself (boundaries, part headers, `purpose`, ...).
MULTIPART_OVERHEAD = 64 * 1024
#: The longest non-file field we read (`purpose`); other fields are skipped unread.
MAX_FIELD_BYTES = 1024
_MAX_FILENAME = 255


class Part:
    """One part of a multipart body: its name, filename (files only) and data, read once in order."""

    def __init__(self, reader: MultipartReader, headers: dict[bytes, bytes]) -> None:
        self._reader = reader
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        self.name = _text(options.get(b"name"))
        self.filename = _text(options.get(b"filename"))
        self.finished = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The part's data as it arrives."""
        while not self.finished:
            kind, data = await self._reader.event()
            if kind == "data":
                yield data
            else:
                self.finished = True

    async def text(self, limit: int = MAX_FIELD_BYTES) -> str:
        """A small field's value."""
        value = bytearray()
        async for chunk in self.chunks():
            value += chunk
            if len(value) > limit:
                raise InvalidUpload(f"the field `{self.name}` is longer than {limit} bytes", param=self.name)
        return value.decode("utf-8", errors="replace").strip()

    async def skip(self) -> None:
        """Read past whatever the caller left of the part's data."""
        async for _ in self.chunks():
            pass


class MultipartReader:
    """Pull-style parts over a streamed body (python-multipart's parser pushes events into a queue)."""

    def __init__(self, body: AsyncIterator[bytes], boundary: bytes, max_body_bytes: int) -> None:
        self._body = body
        self._max = max_body_bytes
        self.received = 0
        self._events: deque[tuple[str, Any]] = deque()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._headers.clear,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self._events.append(("part", dict(self._headers))),
            "on_part_data": lambda data, start, end: self._events.append(("data", bytes(data[start:end]))),
            "on_part_end": lambda: self._events.append(("end", None)),
            "on_end": lambda: self._events.append(("done", None)),
        })
        self._done = False

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).strip().lower()] = bytes(self._header_value).strip()
        self._header_name.clear()
        self._header_value.clear()

    async def event(self) -> tuple[str, Any]:
        """The next parser event, reading more of the body when none is queued."""
        while not self._events:
            if self._done:
                return "done", None
            try:
                chunk = await anext(self._body)
            except StopAsyncIteration:
                raise InvalidUpload("the multipart body ended before its closing boundary") from None
            self.received += len(chunk)
            if self.received > self._max:
                raise _too_large(self._max)
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidUpload(f"malformed multipart body: {exc}") from None
        kind, value = self._events.popleft()
        self._done = kind == "done"
        return kind, value

    async def parts(self) -> AsyncIterator[Part]:
        """Every part in order; a part the caller did not read to its end is skipped."""
        while True:
            kind, headers = await self.event()
            if kind == "done":
                return
            if kind == "part":
                part = Part(self, headers)
                yield part
                await part.skip()


async def receive_file(services: Services, request: Request[Any, Any, Any], owner_id: UUID) -> FileRow:
    """Store the `file` part of a multipart upload with the `purpose` field's purpose.

    Raises:
        InvalidUpload: not multipart/form-data, no `file` part, `purpose` missing or invalid.
        FileTooLarge, FileQuotaExceeded: nothing was stored.
    """
    limit = services.settings.max_file_bytes + MULTIPART_OVERHEAD
    staged: StagedFile | None = None
    try:
        reader = MultipartReader(request.stream().__aiter__(), _boundary(request), limit)
        announced = request.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > limit:
            raise _too_large(limit)
        purpose: str | None = None
        async for part in reader.parts():
            if part.name == "purpose":
                purpose = files.check_purpose(await part.text())
            elif part.name == "file":
                if staged is not None:
                    raise InvalidUpload("send one `file` part per upload", param="file")
                staged = await files.stage_file(services, owner_id, _filename(part), part.chunks())
        if staged is None:
            raise InvalidUpload("no `file` part: send the file as the multipart field `file`", param="file")
        purpose = files.check_purpose(purpose)
        processing = None
        if purpose in knowledge.SEARCH_PURPOSES:
            # Files for search start processing in the transaction that writes their row.
            route = services.catalog.resolve(services.settings.knowledge_embedding_model, "embedding")
            processing = knowledge.Processing(services, route)
        committing, staged = staged, None  # commit_file discards the bytes itself if it refuses
        row = await files.commit_file(services, committing, purpose, then=processing)
        if processing is not None:
            await processing.send()
        return row
    except BaseException:
        if staged is not None:
            await files.discard_file(services, staged)
        raise


def _boundary(request: Request[Any, Any, Any]) -> bytes:
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidUpload("send the upload as multipart/form-data with the fields `file` and `purpose`")
    return boundary


def _filename(part: Part) -> str:
    """The file's own name, without any directories a client put in front of it (or control characters)."""
    name = "".join(c for c in part.filename or "" if c.isprintable())
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name:
        raise InvalidUpload("the `file` part must be a file (with a filename)", param="file")
    return name[:_MAX_FILENAME]


def _text(value: bytes | None) -> str | None:
    # Header bytes are UTF-8 in practice (RFC 7578 §5.1); python-multipart hands them back byte for byte.
    return None if value is None else value.decode("utf-8", errors="replace")


def _too_large(limit: int) -> FileTooLarge:
    return FileTooLarge(f"the upload is larger than the limit of {limit - MULTIPART_OVERHEAD} bytes per file",
                        limit=limit - MULTIPART_OVERHEAD)
