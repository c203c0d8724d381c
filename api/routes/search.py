"""`POST /v1/search`: the caller's best-matching chunks, with scores and where they lie in each file.

Hybrid by default (pgvector cosine + PostgreSQL full-text, fused by
reciprocal rank); `mode: vector` or `text` runs one side alone and reports
its own score. Only the caller's files are ever searched (`file_ids` narrows
them; another user's file id simply matches nothing).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import post
from litestar.channels import ChannelsPlugin

from api import knowledge as search_api
from api.state import Services
from jobs import knowledge, vector_stores
from jobs.accounts import Principal


class SearchRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A native search."""

    query: Annotated[str, msgspec.Meta(min_length=1)]
    top_k: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    #: Only these files (default: all of yours that are processed).
    file_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=1000)] | None = None
    #: Only the files of this vector store.
    vector_store_id: str | None = None
    mode: knowledge.SearchMode = "hybrid"
    #: Drop results scoring below this (the score of the mode: 0..1 for hybrid and vector).
    min_score: float = 0.0


class SearchResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The hits, best first."""

    query: str
    mode: str
    data: list[knowledge.Hit]
    object: str = "search_results"


@post("/v1/search", tags=["search"], summary="Search your files", status_code=200)
async def search(data: SearchRequest, services: Services, principal: Principal,
                 channels: ChannelsPlugin) -> SearchResponse:
    """The `top_k` chunks of your processed files that best match `query`: each with its file, text,
    score, PDF page and character offsets, and its rank on the vector and full-text sides.

    413 `query_too_long` past `SWITCHYARD_MAX_QUERY_CHARS`. The query is embedded as an `embedding` job
    (charged like `/v1/embeddings`) unless `mode` is `text`.
    """
    if data.vector_store_id is not None:
        await vector_stores.get_store(services.pool, data.vector_store_id, principal.user_id)
    scope = knowledge.Scope(owner_id=principal.user_id, file_ids=data.file_ids,
                            vector_store_id=data.vector_store_id)
    hits = await search_api.search(services, principal, channels, scope, query=data.query, top_k=data.top_k,
                                   mode=data.mode, min_score=data.min_score)
    return SearchResponse(query=data.query, mode=data.mode, data=hits)


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [search]
