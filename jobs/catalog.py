"""The model catalogue: public model names → ordered provider targets with prices.

Read from the routes file, a TOML file (env `SWITCHYARD_ROUTES`, default
`routes.toml` at the repo root; "routes" there means model routes, not HTTP ones)
with two tables. `[providers.NAME]` says how to reach a provider (`kind` is
`openai`, `anthropic` or `ollama`; any OpenAI-compatible server is `openai`
with a `base_url`). `[[models."PUBLIC".targets]]` lists, in fallback order,
`provider` + `model` with integer prices in credits per million tokens,
context window, output cap, limits and timeout. `${VAR}` in a string is
replaced by the setting of that name (see `_substitutions`); a provider whose
`api_key` comes out empty is disabled, and so are its targets, so the same
file serves a laptop with no keys and production.

Each model has a `mode`: `chat` (the default; `/v1/chat/completions`,
`chat.completion` jobs) or `embedding` (`/v1/embeddings`, `embedding` jobs).
A model is found only in its own mode (`Catalog.resolve(name, mode)`): a chat
model asked for embeddings is `model_not_found`, naming that mode's models.
Embedding targets also say:

    max_inputs            texts per provider call (default 2048); longer inputs are split into calls
    dimensions            the length of the vectors the target returns natively (None: unknown)
    supports_dimensions   the target can shorten its vectors on request (OpenAI's `dimensions`)

A target serves a requested `dimensions` when it supports shortening (to at
most its native size) or when its native size is exactly that
(`Target.serves_dimensions`). The targets of one embedding model must agree
on `dimensions` — a fallback must never change the vector size (stored
vectors live in one pgvector column) — and never use an `anthropic`
provider, which has no embeddings; the loader refuses such a file. For
embedding targets `context_window` is per input, and `output_price` is unused.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from jobs.errors import UnknownModel
from jobs.settings import Settings


class ProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How to reach one provider."""

    kind: Literal["openai", "anthropic", "ollama"]
    base_url: str = ""
    api_key: str = ""
    #: Providers that need no key (ollama, local OpenAI-compatible servers) set this false.
    requires_key: bool = True


class Target(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One place a public model can be served from."""

    provider: str
    model: str
    #: Credits per million input / output tokens.
    input_price: int = 0
    output_price: int = 0
    context_window: int = 128_000
    max_output: int = 16_384
    rpm: int | None = None
    tpm: int | None = None
    timeout_seconds: float = 60.0
    #: Embedding targets: texts per provider call (a longer input is split into several calls).
    max_inputs: Annotated[int, msgspec.Meta(ge=1)] = 2048
    #: Embedding targets: the native vector length (None: not declared).
    dimensions: Annotated[int, msgspec.Meta(ge=1)] | None = None
    #: Embedding targets: the provider shortens vectors on request (OpenAI's `dimensions` parameter).
    supports_dimensions: bool = False

    @property
    def name(self) -> str:
        """How a target is named in events, metrics, breaker keys and the operators' views."""
        return f"{self.provider}:{self.model}"

    def serves_dimensions(self, dimensions: int | None) -> bool:
        """Whether this target can return vectors of `dimensions` floats (None: its native size)."""
        if dimensions is None or dimensions == self.dimensions:
            return True
        return self.supports_dimensions and (self.dimensions is None or dimensions <= self.dimensions)


#: What a model does: chat completions or embeddings.
Mode = Literal["chat", "embedding"]


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A public model: its targets in fallback order."""

    targets: list[Target]
    description: str = ""
    mode: Mode = "chat"


class CatalogFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The parsed routes file."""

    providers: dict[str, ProviderConfig] = {}
    models: dict[str, Route] = {}


class Catalog:
    """The usable routes: targets whose provider is configured."""

    def __init__(self, parsed: CatalogFile) -> None:
        self.providers = {
            name: p for name, p in parsed.providers.items() if p.api_key or not p.requires_key
        }
        self.models: dict[str, Route] = {}
        for name, route in parsed.models.items():
            targets = [t for t in route.targets if t.provider in self.providers]
            if targets:
                self.models[name] = msgspec.structs.replace(route, targets=targets)

    def targets(self) -> dict[str, Target]:
        """Every usable target by name (the first declaration of a name wins)."""
        found: dict[str, Target] = {}
        for route in self.models.values():
            for target in route.targets:
                found.setdefault(target.name, target)
        return dict(sorted(found.items()))

    def names(self, mode: Mode) -> list[str]:
        """The routable models of a mode, sorted."""
        return sorted(name for name, route in self.models.items() if route.mode == mode)

    def resolve(self, model: str, mode: Mode = "chat") -> Route:
        """The route of a public model name of this mode.

        Raises:
            UnknownModel: no such model in this mode, with the list of valid names.
        """
        route = self.models.get(model)
        if route is None or route.mode != mode:
            available = self.names(mode)
            what = "does not exist" if route is None else f"is a {route.mode} model"
            raise UnknownModel(f"model {model!r} {what}; {mode} models: {', '.join(available)}",
                               available=available)
        return route


def _substitutions(settings: Settings) -> dict[str, str]:
    return {
        "SIMULATOR_URL": settings.simulator_url.rstrip("/"),
        "OPENAI_API_KEY": settings.openai_api_key,
        "OPENAI_BASE_URL": settings.openai_base_url,
        "ANTHROPIC_API_KEY": settings.anthropic_api_key,
        "ANTHROPIC_BASE_URL": settings.anthropic_base_url,
        "OLLAMA_HOST": settings.ollama_host.rstrip("/"),
    }


def _expand(value: Any, subs: dict[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: subs.get(m.group(1), ""), value)
    if isinstance(value, dict):
        return {k: _expand(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, subs) for v in value]
    return value


def load_catalog(settings: Settings, path: str | Path | None = None) -> Catalog:
    """Read and validate the routes file.

    Raises:
        SystemExit: when the file is missing or invalid, naming the field.
    """
    path = Path(path or settings.routes_path)
    try:
        raw = tomllib.loads(path.read_text())
        parsed = msgspec.convert(_expand(raw, _substitutions(settings)), CatalogFile)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise SystemExit(f"invalid routes file {path}: {exc}") from None
    for name, route in parsed.models.items():
        if problem := _route_problem(route, parsed.providers):
            raise SystemExit(f"invalid routes file {path}: model {name!r} {problem}")
    return Catalog(parsed)


def _route_problem(route: Route, providers: dict[str, ProviderConfig]) -> str | None:
    """What is wrong with one model's route, if anything."""
    for target in route.targets:
        if target.provider not in providers:
            return f"uses unknown provider {target.provider!r}"
        if route.mode == "embedding" and providers[target.provider].kind == "anthropic":
            return f"is an embedding model but {target.provider!r} is an anthropic provider (no embeddings)"
    sizes = {t.dimensions for t in route.targets if t.dimensions is not None}
    if route.mode == "embedding" and len(sizes) > 1:
        return f"has targets of different dimensions {sorted(sizes)}; a fallback must not change the vector size"
    return None
