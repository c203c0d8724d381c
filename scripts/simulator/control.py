"""Simulator control API (``/_sim/*``), health check and the shared ``/v1/models`` route.

* ``POST /_sim/faults`` ``{"model": "m", "directives": "fault=500;times=3"}`` installs a
  standing fault for every request to model ``m`` (omit ``model`` or use ``"*"`` for all).
* ``GET /_sim/faults`` lists standing faults; ``DELETE /_sim/faults[?model=m]`` clears them.
* ``GET /_sim/stats`` returns request counts per (api, model) and per outcome.
* ``POST /_sim/reset`` clears stats, ``times`` counters and standing faults.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router, delete, get, post

from . import anthropic_api, openai_api
from .engine import BadRequest, read_json, state_of
from .faults import DirectiveError


def _bad(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    return Response({"error": str(exc)}, status_code=400)


@post("/_sim/faults", status_code=200)
async def install_fault(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Install a standing fault for a model."""
    data = await read_json(request)
    model = data.get("model") or "*"
    directives = data.get("directives")
    if not isinstance(model, str) or not isinstance(directives, str):
        raise BadRequest('expected {"model": str, "directives": str}')
    try:
        parsed = state_of(request).install(model, directives)
    except DirectiveError as exc:
        raise BadRequest(str(exc)) from None
    return {"model": model, "directives": parsed.raw}


@get("/_sim/faults")
async def list_faults(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """List standing faults by model."""
    return {"faults": {m: d.raw for m, d in state_of(request).standing.items()}}


@delete("/_sim/faults", status_code=200)
async def clear_faults(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Clear all standing faults, or only ``?model=``'s."""
    model = request.query_params.get("model")
    state_of(request).clear_faults(model)
    return {"cleared": model or "all"}


@get("/_sim/stats")
async def stats(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Request counts: ``{total, outcomes, apis: {api: {model: {total, outcomes}}}}``."""
    return state_of(request).snapshot()


@post("/_sim/reset", status_code=200)
async def reset(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Clear counters, standing faults and stats."""
    state_of(request).reset()
    return {"reset": True}


@get("/healthz")
async def healthz(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Liveness plus the effective default timing."""
    state = state_of(request)
    return {"status": "ok", "ttft_ms": state.ttft_ms, "tokens_per_s": state.tokens_per_s}


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Models list in OpenAI shape, or Anthropic shape when ``anthropic-version`` is sent."""
    models = state_of(request).known_models()
    # Both vendors use /v1/models; the Anthropic SDK always sends anthropic-version.
    if "anthropic-version" in request.headers:
        return anthropic_api.models_payload(models)
    return openai_api.models_payload(models)


router = Router(
    path="/",
    route_handlers=[install_fault, list_faults, clear_faults, stats, reset, healthz, list_models],
    exception_handlers={BadRequest: _bad},
)
