"""`GET /v1/models`: the public model names of every mode (OpenAI's list format, with prices)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get

from api.state import Services


class ModelTarget(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One target of a model, in fallback order."""

    provider: str
    model: str
    input_price: int
    output_price: int
    context_window: int
    max_output: int
    #: Embedding targets: texts per provider call, native vector size, whether shorter vectors may be asked for.
    max_inputs: int | None = None
    dimensions: int | None = None
    supports_dimensions: bool | None = None


class ModelView(msgspec.Struct, frozen=True, kw_only=True):
    """A model clients can ask for."""

    id: str
    object: str = "model"
    owned_by: str = "switchyard"
    description: str = ""
    #: `chat` (`/v1/chat/completions`) or `embedding` (`/v1/embeddings`).
    mode: str = "chat"
    #: Credits per million tokens of the first target (what a job is reserved at).
    input_price: int = 0
    output_price: int = 0
    context_window: int = 0
    targets: list[ModelTarget] = []


class ModelList(msgspec.Struct, frozen=True, kw_only=True):
    """All routed models."""

    data: list[ModelView]
    object: str = "list"


@get("/v1/models", tags=["models"], summary="List models")
async def list_models(services: Services) -> ModelList:
    """Every public model of the routes file whose providers are configured."""
    views = []
    for name, route in sorted(services.catalog.models.items()):
        first = route.targets[0]
        embedding = route.mode == "embedding"
        views.append(ModelView(
            id=name, description=route.description, mode=route.mode, input_price=first.input_price,
            output_price=first.output_price, context_window=first.context_window,
            targets=[ModelTarget(provider=t.provider, model=t.model, input_price=t.input_price,
                                 output_price=t.output_price, context_window=t.context_window,
                                 max_output=t.max_output, max_inputs=t.max_inputs if embedding else None,
                                 dimensions=t.dimensions if embedding else None,
                                 supports_dimensions=t.supports_dimensions if embedding else None)
                     for t in route.targets],
        ))
    return ModelList(data=views)


#: Route handlers of this module, collected by api/routes/__init__.py.
ROUTES: list[Any] = [list_models]
