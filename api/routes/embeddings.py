"""OpenAI-compatible `POST /v1/embeddings`: an unchanged `openai` SDK's `embeddings.create` works.

Each request is an `embedding` job underneath (routing, fallback, batching to
the provider's input limit, credits, metrics); the response waits for the
job. `encoding_format: base64` returns little-endian float32s, as OpenAI does.
Errors use OpenAI's shape, so the SDK raises its usual exceptions.
"""

from __future__ import annotations

from typing import Any

from litestar import post
from litestar.channels import ChannelsPlugin

from api.openai_errors import openai_error
from api.state import Services
from api.streaming import job_events
from api.submission import submit_embedding
from api.waiting import job_result
from jobs.accounts import Principal
from jobs.openai_format import EmbeddingRequest, embedding_body, embedding_job


@post("/v1/embeddings", tags=["openai"], summary="Embeddings (OpenAI-compatible)",
      exception_handlers={Exception: openai_error}, status_code=200)
async def create_embeddings(data: EmbeddingRequest, services: Services, principal: Principal,
                            channels: ChannelsPlugin) -> dict[str, Any]:
    """Embed a string or a list of strings as a job and answer in OpenAI's format."""
    job = (await submit_embedding(services, principal, embedding_job(data))).job
    result = await job_result(job_events(services, channels, job))
    return embedding_body(result, data.encoding_format, data.model)


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [create_embeddings]
