"""`/v1/vector_stores` (OpenAI's API): stores, their files, and search over them.

An unchanged `openai` SDK works here (`client.vector_stores.create/retrieve/
update/list/delete`, `.files.create/retrieve/update/list/delete`, `.search`),
so errors use OpenAI's shape. Stores link the caller's files, which were
chunked and embedded when uploaded (`jobs/knowledge.py`); a store's search is
hybrid by default and honours `filters` on the files' `attributes`,
`max_num_results` and `ranking_options.score_threshold`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from litestar import Controller, delete, get, post
from litestar.channels import ChannelsPlugin
from litestar.params import Parameter

from api import knowledge as search_api
from api.openai_errors import openai_error
from api.state import Services
from api.strict import strict
from jobs import knowledge, vector_stores
from jobs.accounts import Principal
from jobs.vector_stores import (
    AddFile,
    CreateVectorStore,
    Deleted,
    SearchPage,
    SearchStore,
    UpdateFile,
    UpdateVectorStore,
    VectorStore,
    VectorStoreFile,
    VectorStoreFileList,
    VectorStoreList,
)

if TYPE_CHECKING:
    StrictCreate = CreateVectorStore
    StrictUpdate = UpdateVectorStore
    StrictAddFile = AddFile
    StrictUpdateFile = UpdateFile
    StrictSearch = SearchStore
else:
    StrictCreate = strict(CreateVectorStore)
    StrictUpdate = strict(UpdateVectorStore)
    StrictAddFile = strict(AddFile)
    StrictUpdateFile = strict(UpdateFile)
    StrictSearch = strict(SearchStore)

Limit = Annotated[int, Parameter(ge=1, le=100)]
Order = Literal["asc", "desc"]


class VectorStoreController(Controller):
    """OpenAI-compatible vector stores."""

    path = "/v1/vector_stores"
    tags = ("vector stores",)
    #: Every error of these routes in OpenAI's shape (Litestar reads this layer attribute; it is never mutated).
    exception_handlers = {Exception: openai_error}  # noqa: RUF012

    @post(summary="Create a vector store", status_code=200)
    async def create(self, data: StrictCreate, services: Services, principal: Principal) -> VectorStore:
        """A store holding `file_ids` (your files uploaded with purpose `assistants` or `user_data`; all are
        added or none). More than `SWITCHYARD_MAX_VECTOR_STORE_FILES` files is 413 `vector_store_full`."""
        return await vector_stores.create_store(services.pool, services.settings, principal.user_id, data)

    @get(summary="List vector stores")
    async def list(self, services: Services, principal: Principal, after: str | None = None,
                   before: str | None = None, limit: Limit = 20, order: Order = "desc") -> VectorStoreList:
        """Your stores, newest first."""
        return await vector_stores.list_stores(services.pool, principal.user_id, after=after, before=before,
                                               limit=limit, order=order)

    @get("/{store_id:str}", summary="Retrieve a vector store")
    async def retrieve(self, store_id: str, services: Services, principal: Principal) -> VectorStore:
        """A store with its file counts (`in_progress` while any file is still being processed)."""
        return await vector_stores.get_store(services.pool, store_id, principal.user_id)

    @post("/{store_id:str}", summary="Modify a vector store", status_code=200)
    async def update(self, store_id: str, data: StrictUpdate, services: Services,
                     principal: Principal) -> VectorStore:
        """Change the name, metadata or expiry."""
        return await vector_stores.update_store(services.pool, store_id, principal.user_id, data)

    @delete("/{store_id:str}", summary="Delete a vector store", status_code=200)
    async def remove(self, store_id: str, services: Services, principal: Principal) -> Deleted:
        """Delete the store; its files stay in your files."""
        return await vector_stores.delete_store(services.pool, store_id, principal.user_id)

    @post("/{store_id:str}/files", summary="Add a file to a vector store", status_code=200)
    async def add_file(self, store_id: str, data: StrictAddFile, services: Services,
                       principal: Principal) -> VectorStoreFile:
        """Add one of your files (again: replace its `attributes`). Its status follows its processing."""
        return await vector_stores.add_file(services.pool, services.settings, store_id, principal.user_id, data)

    @get("/{store_id:str}/files", summary="List a vector store's files")
    async def list_files(self, store_id: str, services: Services, principal: Principal, after: str | None = None,
                         before: str | None = None, limit: Limit = 20, order: Order = "desc",
                         filter: vector_stores.FileFilter | None = None) -> VectorStoreFileList:
        """The store's files; `filter` keeps those in one state."""
        return await vector_stores.list_files(services.pool, services.settings, store_id, principal.user_id,
                                              after=after, before=before, limit=limit, order=order, status=filter)

    @get("/{store_id:str}/files/{file_id:str}", summary="Retrieve a vector store file")
    async def retrieve_file(self, store_id: str, file_id: str, services: Services,
                            principal: Principal) -> VectorStoreFile:
        """One file of the store: status, `last_error`, attributes."""
        return await vector_stores.get_file(services.pool, services.settings, store_id, principal.user_id, file_id)

    @post("/{store_id:str}/files/{file_id:str}", summary="Update a vector store file's attributes",
          status_code=200)
    async def update_file(self, store_id: str, file_id: str, data: StrictUpdateFile, services: Services,
                          principal: Principal) -> VectorStoreFile:
        """Replace the file's `attributes`."""
        return await vector_stores.update_file(services.pool, services.settings, store_id, principal.user_id,
                                               file_id, data.attributes)

    @delete("/{store_id:str}/files/{file_id:str}", summary="Remove a file from a vector store", status_code=200)
    async def remove_file(self, store_id: str, file_id: str, services: Services, principal: Principal) -> Deleted:
        """Take the file out of the store (the file itself stays)."""
        return await vector_stores.remove_file(services.pool, store_id, principal.user_id, file_id)

    @post("/{store_id:str}/search", summary="Search a vector store", status_code=200)
    async def search(self, store_id: str, data: StrictSearch, services: Services, principal: Principal,
                     channels: ChannelsPlugin) -> SearchPage:
        """The store's best chunks for `query` (hybrid unless `mode` says `vector` or `text`), filtered by
        `filters` on the files' attributes; `ranking_options.score_threshold` drops weaker results."""
        await vector_stores.get_store(services.pool, store_id, principal.user_id)
        where, params = vector_stores.filter_sql(data.filters) if data.filters else (None, {})
        scope = knowledge.Scope(owner_id=principal.user_id, vector_store_id=store_id, where=where,
                                where_params=params)
        threshold = data.ranking_options.score_threshold if data.ranking_options else 0.0
        hits = await search_api.search(services, principal, channels, scope, query=data.text,
                                       top_k=data.max_num_results, mode=data.mode, min_score=threshold)
        await vector_stores.touch(services.pool, store_id, principal.user_id)
        return SearchPage.of(data.text, hits)


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [VectorStoreController]
