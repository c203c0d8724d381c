"""Provider adapters, one module each, behind the `Provider` protocol (`base.py`)."""

from __future__ import annotations

from jobs.catalog import Catalog, ProviderConfig
from workers.providers.anthropic import AnthropicProvider
from workers.providers.base import Provider
from workers.providers.ollama import OllamaProvider
from workers.providers.openai import OpenAIProvider

_ADAPTERS: dict[str, type[OpenAIProvider] | type[AnthropicProvider] | type[OllamaProvider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "ollama": OllamaProvider,
}


def build_provider(name: str, config: ProviderConfig) -> Provider:
    """The adapter for one configured provider."""
    return _ADAPTERS[config.kind](name, base_url=config.base_url or None, api_key=config.api_key)


def build_providers(catalog: Catalog) -> dict[str, Provider]:
    """Adapters for every usable provider of the catalogue."""
    return {name: build_provider(name, cfg) for name, cfg in catalog.providers.items()}
