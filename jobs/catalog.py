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
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

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


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A public model: its targets in fallback order."""

    targets: list[Target]
    description: str = ""


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
                self.models[name] = Route(targets=targets, description=route.description)

    def resolve(self, model: str) -> Route:
        """The route of a public model name.

        Raises:
            UnknownModel: with the list of valid names.
        """
        route = self.models.get(model)
        if route is None:
            raise UnknownModel(
                f"model {model!r} does not exist; available: {', '.join(sorted(self.models))}",
                available=sorted(self.models),
            )
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
        for target in route.targets:
            if target.provider not in parsed.providers:
                raise SystemExit(
                    f"invalid routes file {path}: model {name!r} uses unknown provider {target.provider!r}"
                )
    return Catalog(parsed)
