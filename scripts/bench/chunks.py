"""What stream readers of the benchmarks decode: only msgspec (children that measure their own RSS import this)."""

from __future__ import annotations

import msgspec


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta


class Chunk(msgspec.Struct):
    """The part of a `chat.completion.chunk` a stream reader needs."""

    choices: list[_Choice] = []


decode_chunk = msgspec.json.Decoder(Chunk).decode
