"""Deterministic text, token counting and embeddings for the provider simulator.

Token model (deliberately simple so tests can predict usage exactly):

* one *token* is one whitespace-separated word;
* prompt tokens = the number of words across every message's text content plus the
  system prompt (``count_prompt_tokens``); magic ``[[sim: ...]]`` directive text is part
  of the prompt and is counted like any other words;
* the reply is a sequence of lowercase words derived from a hash of the model name and
  the conversation, emitted as pieces ``"w0"``, ``" w1"``, ``" w2"`` ... so that the
  concatenation of the streamed pieces equals the non-streamed text.

Embeddings are hashed bags of words, so they behave like a (very plain) real
model: texts that share words are close, unrelated texts are nearly
orthogonal, and a long text is diluted. Each word (lowercased, stopwords
skipped) adds a sublinear weight at a hashed, signed coordinate; a small
hash of the whole text is mixed in so that distinct texts never share a vector.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

DEFAULT_REPLY_TOKENS = 16
DEFAULT_EMBED_DIM = 256

# A fixed vocabulary keeps replies readable in logs while staying fully deterministic.
_VOCAB = (
    "the a an of to in and for with on at from by about as into through after over",
    "between out against during without before under around among queue worker job",
    "batch task model token stream signal packet route switch yard train track rail",
    "engine carriage cargo freight station platform lantern evening morning river stone",
    "garden window bright quiet rapid steady gentle careful simple clear early late",
    "small large green silver golden distant nearby open closed warm cold new old",
    "runs moves waits carries returns builds checks sends holds turns reads writes",
    "finds keeps makes takes brings shows leads grows helps starts ends joins follows",
    "slowly quickly softly gladly often rarely always never together alone again",
    "ahead there here today tomorrow maybe surely mostly partly simply nearly",
)
WORDS: tuple[str, ...] = tuple(word for line in _VOCAB for word in line.split())


def content_text(content: Any) -> str:
    """Return the plain text of a message ``content`` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                # Covers OpenAI {"type":"text"} and Anthropic text blocks; images etc. carry
                # no words, so they contribute nothing to the token count.
                texts.append(part["text"])
        return "\n".join(texts)
    return str(content)


def conversation(messages: Any, system: Any = None) -> list[tuple[str, str]]:
    """Normalise a message list (+ optional top-level system) into (role, text) pairs."""
    convo: list[tuple[str, str]] = []
    system_text = content_text(system)
    if system_text:
        convo.append(("system", system_text))
    if isinstance(messages, list):
        for msg in messages:
            if isinstance(msg, dict):
                convo.append((str(msg.get("role", "user")), content_text(msg.get("content"))))
    return convo


def count_words(text: str) -> int:
    """Count tokens in ``text``: one token per whitespace-separated word."""
    return len(text.split())


def count_prompt_tokens(messages: Any, system: Any = None) -> int:
    """Prompt tokens: words across all message contents plus the system prompt."""
    return sum(count_words(text) for _, text in conversation(messages, system))


def _digest(payload: Any, size: int) -> bytes:
    """Return ``size`` bytes of SHAKE-256 output over a canonical JSON encoding."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    # SHAKE output is prefix-stable, so a shorter reply is a prefix of a longer one.
    return hashlib.shake_256(blob.encode("utf-8")).digest(max(size, 1))


def reply_words(model: str, convo: Sequence[tuple[str, str]], n: int) -> list[str]:
    """Return ``n`` deterministic words for (model, conversation)."""
    if n <= 0:
        return []
    raw = _digest(["reply", model, [list(pair) for pair in convo]], 2 * n)
    indexes = struct.unpack(f"<{n}H", raw[: 2 * n])
    return [WORDS[i % len(WORDS)] for i in indexes]


def pieces(words: Sequence[str]) -> list[str]:
    """Render words as streamed token pieces: the first bare, the rest space-prefixed."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def reply_text(words: Sequence[str]) -> str:
    """Join reply words exactly as the concatenated stream pieces would."""
    return "".join(pieces(words))


_WORD = re.compile(r"[^\W_]+")
#: Words too common to tell texts apart (as a real model learns to ignore them).
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "in", "into", "is", "it",
    "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "will", "with", "what", "which", "who",
    "how", "when", "where", "why", "do", "does", "did", "can", "not", "no",
})
#: Weight of the whole-text hash next to the bag of words.
_NOISE = 0.1


@lru_cache(maxsize=65_536)
def _slot(word: str, dimensions: int) -> tuple[int, float]:
    """The coordinate and sign one word adds to."""
    h = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h[:4], "little") % dimensions, 1.0 if h[4] & 1 else -1.0


def _unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values] if norm else values


def embed(text: str, dimensions: int = DEFAULT_EMBED_DIM) -> list[float]:
    """Return a deterministic unit-norm vector of ``dimensions`` floats for ``text``."""
    dimensions = max(1, int(dimensions))
    raw = _digest(["embed", text], 2 * dimensions)
    noise = _unit([v / 32767.5 - 1.0 for v in struct.unpack(f"<{dimensions}H", raw)])
    bag = [0.0] * dimensions
    for word, count in Counter(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS).items():
        slot, sign = _slot(word, dimensions)
        bag[slot] += sign * (1.0 + math.log(count))
    vector = _unit([b + _NOISE * n for b, n in zip(_unit(bag), noise, strict=True)])
    if not any(vector):  # astronomically unlikely, but never divide by zero
        return [1.0] + [0.0] * (dimensions - 1)
    return vector


def embed_base64(vector: Iterable[float]) -> str:
    """Encode a vector as base64 little-endian float32 (OpenAI ``encoding_format=base64``)."""
    values = list(vector)
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
