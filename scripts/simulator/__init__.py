"""Switchyard provider simulator — a DEVELOPMENT/TEST TOOL, not a provider.

It fakes the OpenAI, Anthropic and Ollama HTTP wire protocols well enough that the real,
unmodified official SDKs work against it (point their ``base_url``/``host`` at it). It
never calls a real model: every reply is a deterministic string of words derived from a
hash of (model, messages). Never deploy it as, or route production traffic to, a provider.

Endpoints
---------
* OpenAI:    ``POST /v1/chat/completions`` (JSON or SSE), ``POST /v1/embeddings``,
  ``GET /v1/models``  — SDK ``base_url = URL + "/v1"``
* Anthropic: ``POST /v1/messages`` (JSON or SSE)  — SDK ``base_url = URL``
* Ollama:    ``POST /api/chat`` (NDJSON / JSON), ``POST /api/embed``, ``GET /api/tags``
  — SDK ``host = URL``
* Control:   ``POST/GET/DELETE /_sim/faults``, ``GET /_sim/stats``, ``POST /_sim/reset``,
  ``GET /healthz``

Token model: one token = one whitespace-separated word. Prompt tokens are the words of
every message's text plus the system prompt (see :func:`count_prompt_tokens`); the reply
is 16 words by default, capped by the request's max-tokens setting.

Fault injection: directives in an ``x-sim`` header or anywhere in message text as
``[[sim: fault=429;retry_after=2;times=1]]`` (see :mod:`scripts.simulator.faults`).

Usage::

    python -m scripts.simulator --host 127.0.0.1 --port 8900 --ttft-ms 50 --tps 40

    from scripts.simulator import serve_in_thread
    with serve_in_thread(ttft_ms=0) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="sim")
"""

from __future__ import annotations

from .app import create_app, serve_in_thread
from .faults import DirectiveError, Directives, SimState, parse_directives
from .text import (
    DEFAULT_EMBED_DIM,
    DEFAULT_REPLY_TOKENS,
    conversation,
    count_prompt_tokens,
    count_words,
    embed,
    reply_text,
    reply_words,
)

__all__ = [
    "DEFAULT_EMBED_DIM",
    "DEFAULT_REPLY_TOKENS",
    "DirectiveError",
    "Directives",
    "SimState",
    "conversation",
    "count_prompt_tokens",
    "count_words",
    "create_app",
    "embed",
    "parse_directives",
    "reply_text",
    "reply_words",
    "serve_in_thread",
]
