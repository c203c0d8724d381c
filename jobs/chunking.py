"""Chunking for file search: an extracted document's text in token-bounded, overlapping chunks, offline.

    chunk(extracted, chunk_tokens=512, overlap_tokens=64) -> [Chunk(seq, text, char_start, char_end, page, …)]

`semantic_text_splitter` does the splitting: it fills each chunk with the
largest semantic units that fit (paragraphs, then sentences, then words),
counting tokens with the tokenizer of `TOKENIZER_MODEL` (cl100k_base), whose
BPE ranks are compiled into the wheel, so nothing is downloaded. Markdown
documents use its markdown splitter, which also respects headings, lists and
code blocks. Consecutive chunks overlap by up to `overlap_tokens`, and each
chunk's character offsets index `Extracted.text` exactly, so a PDF chunk can
name the pages it spans (by bisecting the pages' starts).

`Chunk.tokens` is exact: `count_tokens` encodes with `bpe-openai`, whose
cl100k_base tables are compiled into its wheel too (a test checks its counts
against the splitter's own tokenizer, which exposes no counter).

A document that makes more than `max_chunks` chunks raises `TooManyChunks`.
Before splitting, a text too long for `max_chunks` chunks even if every
token were as long as the tokenizer's longest (128 characters) fails at once;
the exact check follows the split, before any token is counted.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Callable

import bpe_openai
import msgspec
from semantic_text_splitter import MarkdownSplitter, TextSplitter

from jobs.errors import TooManyChunks
from jobs.extract import Extracted, Page

#: The model whose tokenizer sizes chunks (OpenAI's `text-embedding-3-*` share cl100k_base).
TOKENIZER_MODEL = "text-embedding-3-small"
TOKENIZER_ENCODING = "cl100k_base"
#: Characters of cl100k_base's longest token (a run of 128 spaces): no chunk is longer than this per token.
_LONGEST_TOKEN_CHARS = 128


class Chunk(msgspec.Struct, frozen=True, kw_only=True):
    """One chunk of a document: `text == extracted.text[char_start:char_end]`.

    `page` and `page_end` are the PDF pages of its first and last characters (None for documents without pages).
    """

    seq: int
    text: str
    char_start: int
    char_end: int
    page: int | None
    page_end: int | None
    tokens: int


def chunk(extracted: Extracted, *, chunk_tokens: int = 512, overlap_tokens: int = 64,
          max_chunks: int = 10_000) -> list[Chunk]:
    """The chunks of `extracted.text`, in order, each of at most `chunk_tokens` tokens (none for empty text).

    Raises:
        ValueError: unless `0 <= overlap_tokens < chunk_tokens`.
        TooManyChunks: the text makes more than `max_chunks` chunks.
    """
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError(f"need 0 <= overlap_tokens < chunk_tokens, got {overlap_tokens} and {chunk_tokens}")
    text = extracted.text
    if not text:
        return []
    _check_floor(text, chunk_tokens, max_chunks)
    kind = "markdown" if extracted.type == "markdown" else "text"
    spans = _splitter(kind, chunk_tokens, overlap_tokens).chunk_indices(text)
    if len(spans) > max_chunks:
        raise TooManyChunks(f"the document's text makes {len(spans)} chunks of up to {chunk_tokens} tokens, "
                            f"more than the limit of {max_chunks}", chunks=len(spans), limit=max_chunks)
    page_of = _page_locator(extracted.pages)
    return [Chunk(seq=seq, text=piece, char_start=start, char_end=start + len(piece), page=page_of(start),
                  page_end=page_of(start + len(piece) - 1), tokens=count_tokens(piece))
            for seq, (start, piece) in enumerate(spans)]


def count_tokens(text: str) -> int:
    """The exact number of `TOKENIZER_MODEL` (cl100k_base) tokens in `text`."""
    return len(_encoding().encode_ordinary(text)) if text else 0


@functools.cache
def _encoding() -> bpe_openai.Encoding:
    return bpe_openai.get_encoding(TOKENIZER_ENCODING)


def _check_floor(text: str, chunk_tokens: int, max_chunks: int) -> None:
    """Fail before splitting when even the longest possible tokens would make more than `max_chunks` chunks.

    Chunks cover every non-whitespace character and hold at most `chunk_tokens` tokens of at most
    `_LONGEST_TOKEN_CHARS` characters, so this many chunks at least are needed.

    Raises:
        TooManyChunks: the floor is above `max_chunks`.
    """
    solid = len(text) - sum(text.count(space) for space in " \n\t")
    floor = -(-solid // (chunk_tokens * _LONGEST_TOKEN_CHARS))
    if floor > max_chunks:
        raise TooManyChunks(f"the document's text ({len(text)} characters) makes at least {floor} chunks of "
                            f"up to {chunk_tokens} tokens, more than the limit of {max_chunks}",
                            chunks=floor, limit=max_chunks)


def _page_locator(pages: list[Page]) -> Callable[[int], int | None]:
    """A function from a character offset to the number of the (non-empty) page holding it."""
    spans = [page for page in pages if page.end > page.start]
    if not spans:
        return lambda offset: None
    starts = [page.start for page in spans]

    def page_of(offset: int) -> int | None:
        return spans[max(0, bisect_right(starts, offset) - 1)].number

    return page_of


@functools.cache
def _splitter(kind: str, capacity: int, overlap: int) -> TextSplitter | MarkdownSplitter:
    """The (trimming) splitter of `kind` ("markdown" or "text") for chunks of `capacity` tokens."""
    if kind == "markdown":
        return MarkdownSplitter.from_tiktoken_model(TOKENIZER_MODEL, capacity=capacity, overlap=overlap)
    return TextSplitter.from_tiktoken_model(TOKENIZER_MODEL, capacity=capacity, overlap=overlap)
