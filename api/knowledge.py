"""Searching the caller's files: the query embedded as an `embedding` job, then the knowledge search.

The query goes through the same path as `POST /v1/embeddings` (limits,
credits, routing with fallback, metrics) on the route that embedded the
chunks (`SWITCHYARD_KNOWLEDGE_EMBEDDING_MODEL`); a `text`-mode search embeds
nothing. Both `/v1/search` and `/v1/vector_stores/{id}/search` use this.
"""

from __future__ import annotations

from litestar.channels import ChannelsPlugin

from api.state import Services
from api.streaming import job_events
from api.submission import submit_embedding
from api.waiting import job_result
from jobs import knowledge, vector_stores
from jobs.accounts import Principal
from jobs.kinds import EmbeddingInput, EmbeddingJob


async def embed_query(services: Services, principal: Principal, channels: ChannelsPlugin, query: str) -> list[float]:
    """The query's vector from the knowledge embedding route."""
    job = EmbeddingJob(input=EmbeddingInput(model=services.settings.knowledge_embedding_model, input=query))
    row = (await submit_embedding(services, principal, job)).job
    result = await job_result(job_events(services, channels, row))
    vector: list[float] = result["data"][0]
    return vector


async def search(services: Services, principal: Principal, channels: ChannelsPlugin, scope: knowledge.Scope, *,
                 query: str, top_k: int, mode: knowledge.SearchMode, min_score: float = 0.0) -> list[knowledge.Hit]:
    """The best `top_k` chunks of `scope` for `query`.

    Raises:
        InvalidRequest, QueryTooLong: a blank or over-long query (nothing was embedded).
    """
    query = vector_stores.check_query(services.settings, query)
    vector = None if mode == "text" else await embed_query(services, principal, channels, query)
    return await knowledge.search(services.pool, scope, query=query, vector=vector, top_k=top_k, mode=mode,
                                  min_score=min_score)
