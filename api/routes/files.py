"""`/v1/files` (OpenAI's Files API): upload, list, read, download, delete.

An unchanged `openai` SDK works against these routes (`client.files.create`,
`.list`, `.retrieve`, `.content`, `.delete`), so errors here use OpenAI's
shape like the other OpenAI-compatible routes. Uploads and downloads stream:
neither holds a whole file in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import Parameter
from litestar.response import Stream

from api.lookup import owner_filter
from api.openai_errors import openai_error
from api.state import Services
from api.uploads import receive_file
from jobs import files, knowledge
from jobs.accounts import Principal
from jobs.errors import FileNotFound
from jobs.files import DeletedFile, FileList, FileRow, FileView


class ChunkList(msgspec.Struct, frozen=True, kw_only=True):
    """A page of a file's chunks."""

    data: list[knowledge.ChunkView]
    has_more: bool
    object: str = "list"


def _upload_body() -> RequestBody:
    """The upload's body, for the OpenAPI schema: the handler reads it by hand (streaming), so say it here."""
    form = Schema(type=OpenAPIType.OBJECT, required=["file", "purpose"], properties={
        "file": Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY),
        "purpose": Schema(type=OpenAPIType.STRING, enum=list(files.UPLOAD_PURPOSES)),
    })
    return RequestBody(required=True, content={"multipart/form-data": OpenAPIMediaType(schema=form)})


@dataclass
class _UploadOperation(Operation):
    """The upload's OpenAPI operation, with its multipart body."""

    def __post_init__(self) -> None:
        self.request_body = _upload_body()


class FileController(Controller):
    """OpenAI-compatible Files API."""

    path = "/v1/files"
    tags = ("files",)
    #: Every error of these routes in OpenAI's shape (Litestar reads this layer attribute; it is never mutated).
    exception_handlers = {Exception: openai_error}  # noqa: RUF012

    @post(summary="Upload a file", status_code=200, request_max_body_size=None, operation_class=_UploadOperation)
    async def create(self, request: Request[Any, Any, Any], services: Services, principal: Principal) -> FileView:
        """Upload a file as multipart/form-data with the fields `file` and `purpose` (`batch`, `assistants`,
        `user_data`).

        The body is streamed into storage as it arrives. A file for search (`assistants`, `user_data`) is
        answered `processing`, with the `process_job_id` that extracts, chunks and embeds it (its worst-case
        cost is reserved: 402 `insufficient_credits` stores nothing); it becomes `processed`, or `error`
        with the reason in `status_details`. A file over `SWITCHYARD_MAX_FILE_BYTES` is
        413 `file_too_large`; one that would take your files over `SWITCHYARD_FILE_QUOTA_BYTES` is 413
        `file_quota_exceeded`; either way nothing is stored.
        """
        return FileView.of(await receive_file(services, request, principal.user_id))

    @get(summary="List your files")
    async def list(
        self,
        services: Services,
        principal: Principal,
        purpose: Literal["batch", "batch_output", "assistants", "user_data"] | None = None,
        after: str | None = None,
        limit: Annotated[int, Parameter(ge=1, le=10_000)] = 10_000,
        order: Literal["asc", "desc"] = "desc",
    ) -> FileList:
        """Your files, newest first (`order=asc`: oldest first); `after` is the last file id of the previous page."""
        rows = await files.list_files(services.pool, principal.user_id, purpose=purpose, after=after,
                                      limit=limit + 1, order=order)
        return FileList.of(rows, limit)

    @get("/{file_id:str}", summary="Get a file")
    async def retrieve(self, file_id: str, services: Services, principal: Principal) -> FileView:
        """A file's metadata: size, sha256, purpose, filename."""
        return FileView.of(await _load(services, principal, file_id))

    @get("/{file_id:str}/content", summary="Download a file's content", media_type="application/octet-stream")
    async def content(self, file_id: str, services: Services, principal: Principal) -> Stream:
        """The file's bytes, streamed."""
        row = await _load(services, principal, file_id)
        chunks = await files.read_file(services, row)
        return Stream(chunks, media_type="application/octet-stream",
                      headers={"Content-Length": str(row.bytes), "Content-Disposition": _attachment(row.filename)})

    @post("/{file_id:str}/process", status_code=202, summary="Process a file for search again")
    async def process(self, file_id: str, services: Services, principal: Principal) -> FileView:
        """Extract, chunk and embed the file again (after an error, or new chunking settings or model).

        Answers at once with the file `processing` and its `process_job_id`, whose events
        (`/v1/jobs/{id}/events`) report `progress`. The old chunks stay searchable until the new ones
        replace them all at once.
        """
        route = services.catalog.resolve(services.settings.knowledge_embedding_model, "embedding")
        row, _ = await knowledge.reprocess(services, route, file_id, principal.user_id)
        return FileView.of(row)

    @get("/{file_id:str}/chunks", summary="List a processed file's chunks")
    async def chunks(self, file_id: str, services: Services, principal: Principal,
                     after: Annotated[int, Parameter(ge=-1)] = -1,
                     limit: Annotated[int, Parameter(ge=1, le=1000)] = 100) -> ChunkList:
        """The file's chunks in order, with their token counts, PDF pages and character offsets;
        pass the last `index` as `after` for the next page."""
        row = await _load(services, principal, file_id)
        chunks = await knowledge.file_chunks(services.pool, row.id, row.owner_id, after=after, limit=limit + 1)
        return ChunkList(data=chunks[:limit], has_more=len(chunks) > limit)

    @delete("/{file_id:str}", status_code=200, summary="Delete a file")
    async def remove(self, file_id: str, services: Services, principal: Principal) -> DeletedFile:
        """Delete a file, its stored bytes and its chunks (it leaves every vector store it was in)."""
        row = await files.delete_file(services, file_id, owner_filter(principal))
        if row is None:
            raise FileNotFound(f"file {file_id!r} not found")
        return DeletedFile(id=row.id)


async def _load(services: Services, principal: Principal, file_id: str) -> FileRow:
    """A file the caller may see, or 404 (another owner's file is indistinguishable from none)."""
    row = await files.get_file(services.pool, file_id, owner_filter(principal))
    if row is None:
        raise FileNotFound(f"file {file_id!r} not found")
    return row


def _attachment(filename: str) -> str:
    """`Content-Disposition` for a download: an ASCII fallback name and the real one (RFC 6266)."""
    fallback = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename)}"


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [FileController]
