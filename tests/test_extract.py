"""Type sniffing, text extraction and chunking on real files built by the tests (no servers involved)."""

from __future__ import annotations

import itertools
import random
import time

import pytest
from fpdf.enums import EncryptionMethod
from semantic_text_splitter import TextSplitter

from jobs.chunking import TOKENIZER_MODEL, Chunk, chunk, count_tokens
from jobs.errors import FileCorrupt, FileEncrypted, FileHasNoText, TooManyChunks, TooManyPages, UnsupportedFileType
from jobs.extract import Extracted, Page, extract, normalise_text, sniff
from tests.documents import OLE_HEADER, SENTENCES, make_docx, make_pdf, make_png, make_zip, prose


def plain(text: str) -> Extracted:
    return Extracted(type="text", text=text, pages=[], page_count=0)


# --- PDF ------------------------------------------------------------------------------------------------------


def test_pdf_pages_have_spans_and_chunks_cite_their_page() -> None:
    extracted = extract(make_pdf(list(SENTENCES)), "field-notes.pdf")

    assert (extracted.type, extracted.page_count, extracted.title) == ("pdf", 3, "Field Notes")
    assert [page.number for page in extracted.pages] == [1, 2, 3]
    for page, sentence in zip(extracted.pages, SENTENCES, strict=True):
        assert extracted.text[page.start:page.end] == sentence
    where = extracted.text.index("The quartz falcon migrates at dawn.")
    assert extracted.pages[1].start <= where < extracted.pages[1].end
    assert extracted.text == "\n\n".join(SENTENCES)

    small = chunk(extracted, chunk_tokens=16, overlap_tokens=4)
    falcon = next(c for c in small if "quartz falcon" in c.text)
    assert (falcon.page, falcon.page_end) == (2, 2)
    assert [c.page for c in small if "amber heron" in c.text] == [1]
    whole = chunk(extracted)
    assert len(whole) == 1 and (whole[0].page, whole[0].page_end) == (1, 3)


def test_pdf_empty_page_has_an_empty_span_and_hyphenated_words_are_joined() -> None:
    extracted = extract(make_pdf(["An exam-\nple of Jean-\nPaul's notes.", "", "Last page text."]))

    assert extracted.page_count == 3
    assert extracted.text == "An example of Jean-\nPaul's notes.\n\nLast page text."
    first, empty, last = extracted.pages
    assert empty.start == empty.end == first.end
    assert extracted.text[last.start:last.end] == "Last page text."
    chunks = chunk(extracted, chunk_tokens=8, overlap_tokens=0)
    assert [(c.text, c.page, c.page_end) for c in chunks] == [
        ("An example of Jean-", 1, 1), ("Paul's notes.\n\nLast page text.", 1, 3)]


def test_pdf_with_a_user_password_is_encrypted() -> None:
    data = make_pdf(list(SENTENCES), owner_password="o", user_password="secret",
                    encryption_method=EncryptionMethod.RC4)
    with pytest.raises(FileEncrypted, match="password-protected"):
        extract(data, "locked.pdf")


def test_pdf_encrypted_with_an_empty_user_password_is_readable() -> None:
    data = make_pdf(list(SENTENCES), owner_password="o", user_password="", encryption_method=EncryptionMethod.RC4)
    extracted = extract(data)
    assert extracted.page_count == 3 and "quartz falcon" in extracted.text


def test_damaged_pdfs_are_corrupt() -> None:
    data = bytearray(make_pdf(list(SENTENCES))[: len(make_pdf(list(SENTENCES))) // 2])
    for at in range(200, len(data), 37):
        data[at] ^= 0x5A
    with pytest.raises(FileCorrupt, match="PDF"):
        extract(bytes(data), "half.pdf")
    with pytest.raises(FileCorrupt, match="PDF is damaged"):
        extract(b"%PDF-1.7\n garbage")


def test_too_many_pages() -> None:
    with pytest.raises(TooManyPages) as caught:
        extract(make_pdf(list(SENTENCES)), max_pages=2)
    assert caught.value.extra == {"pages": 3, "limit": 2} and caught.value.status == 413


def test_pdf_without_text_needs_ocr() -> None:
    with pytest.raises(FileHasNoText, match="OCR"):
        extract(make_pdf(["", ""]))


# --- DOCX -----------------------------------------------------------------------------------------------------


def test_docx_paragraphs_and_table_rows_in_body_order() -> None:
    extracted = extract(make_docx(), "report.bin")

    assert (extracted.type, extracted.title, extracted.pages, extracted.page_count) == (
        "docx", "Quarterly Report", [], 0)
    assert extracted.text == ("Harbour Operations\n\nThe first paragraph describes the tides.\n\n"
                              "Name | Role\nAda | Pilot\nGrace | Navigator\n\nThe closing paragraph follows the table.")


def test_broken_docx_archives_are_corrupt() -> None:
    good = make_docx()
    with pytest.raises(FileCorrupt, match="damaged ZIP"):
        extract(good[: len(good) // 2], "cut.docx")
    with pytest.raises(FileCorrupt, match=r"word/document\.xml"):
        extract(make_zip({"[Content_Types].xml": b"<Types/>", "word/styles.xml": b"<styles/>"}))
    with pytest.raises(FileCorrupt, match=r"\.docx is damaged"):
        extract(make_zip({"word/document.xml": b"<not-a-package/>"}))


@pytest.mark.parametrize(("members", "named"), [
    ({"[Content_Types].xml": b"<Types/>", "xl/workbook.xml": b"<workbook/>"}, "Excel workbook"),
    ({"mimetype": b"application/epub+zip", "content.opf": b"<package/>"}, r"application/epub\+zip"),
    ({"photos/cat.txt": b"meow"}, "a ZIP archive"),
])
def test_other_zip_formats_are_unsupported(members: dict[str, bytes], named: str) -> None:
    with pytest.raises(UnsupportedFileType, match=named):
        sniff(make_zip(members), "file.docx")


# --- HTML -----------------------------------------------------------------------------------------------------

PAGE = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="windows-1252"><title>  Harbour   Guide </title>
<style>.banner { color: red }</style><script>var tracker = "SCRIPT-SECRET";</script></head>
<body>
<header><a href="/">Site Header Logo</a></header>
<nav><ul><li><a href="/">Home Menu</a></li><li><a href="/pricing">Pricing Menu</a></li></ul></nav>
<aside class="cookies">We use cookies to improve your experience. Accept all?</aside>
<main>
  <article>
    <header><h1>Tides of the Caf\xe9 Harbour</h1></header>
    <p>The harbour   fills twice
       a day with <b>grey</b> water.</p>
    <ul><li>High tide at noon</li><li>Low tide at six</li></ul>
    <table><tr><th>Berth</th><th>Depth</th></tr><tr><td>North</td><td><p>12 m</p></td></tr></table>
    <form><label>Subscribe to our newsletter</label><input name="email"></form>
  </article>
</main>
<div role="contentinfo">Legal notice</div>
<footer>Copyright 2025 Harbour Inc.</footer>
<script>console.log("TRAILING-SCRIPT")</script>
</body></html>"""


def test_html_main_content_without_boilerplate() -> None:
    extracted = extract(PAGE, "guide.txt")

    assert (extracted.type, extracted.title) == ("html", "Harbour Guide")
    assert extracted.text == ("Tides of the Café Harbour\n\nThe harbour fills twice a day with grey water.\n\n"
                              "High tide at noon\nLow tide at six\n\nBerth | Depth\nNorth | 12 m")
    for boilerplate in ("Menu", "Site Header", "cookies", "Copyright", "SCRIPT", "color", "newsletter", "Legal"):
        assert boilerplate not in extracted.text


def test_html_without_main_still_drops_boilerplate() -> None:
    page = b"""  <html><body>
    <div class="top"><nav>Products | About</nav></div>
    <header>Welcome banner</header>
    <div><h2>Opening hours</h2><div>Monday to Friday, <em>nine</em> to five.</div></div>
    <p>Closed on public holidays.<br>Call ahead.</p>
    <noscript>Enable JavaScript</noscript><iframe src="ad.html">Advert</iframe>
    <footer>Copyright 2025</footer><script>track()</script>
    </body></html>"""
    extracted = extract(page)

    assert extracted.type == "html" and extracted.title is None
    assert extracted.text == ("Opening hours\n\nMonday to Friday, nine to five.\n\n"
                              "Closed on public holidays.\nCall ahead.")


def test_html_of_only_boilerplate_has_no_text() -> None:
    with pytest.raises(FileHasNoText, match="boilerplate"):
        extract(b"<!doctype html><html><body><nav>Home</nav><footer>Copyright</footer></body></html>")


# --- Sniffing -------------------------------------------------------------------------------------------------


def test_pdf_named_txt_is_a_pdf() -> None:
    data = make_pdf(list(SENTENCES))
    assert sniff(data, "notes.txt") == "pdf"
    assert extract(data, "notes.txt").page_count == 3


@pytest.mark.parametrize(("data", "name", "says"), [
    (make_png(), "report.pdf", "an image of type PNG"),
    (random.Random(3).randbytes(4096), "a.txt", "binary content"),
    (bytes(b for b in random.Random(4).randbytes(8192) if b), "a.txt", "binary content"),
    (b"{\\rtf1\\ansi Hello}", "letter.txt", "RTF"),
    (b"plain words\x00with a NUL byte", "a.txt", "binary content"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"></svg>', "logo.html", "SVG"),
])
def test_content_that_is_not_a_document_is_unsupported(data: bytes, name: str, says: str) -> None:
    with pytest.raises(UnsupportedFileType, match=says) as caught:
        extract(data, name)
    assert caught.value.status == 415


def test_ole_compound_file_is_encrypted_office() -> None:
    with pytest.raises(FileEncrypted, match=r"encrypted or legacy \.doc Office file"):
        sniff(OLE_HEADER, "x.docx")
    with pytest.raises(FileEncrypted):
        extract(OLE_HEADER, "x.docx")


@pytest.mark.parametrize(("data", "name", "kind"), [
    (b"# Title\n\n- one\n- two\n", "", "markdown"),
    (b"Intro\n\n```python\nprint(1)\n```\n", "snippet", "markdown"),
    (b"Just a plain sentence.\n", "README.md", "markdown"),
    (b"# Title\n\nbody\n", "notes.txt", "text"),
    (b"Just a plain sentence.\n", "", "text"),
    (b"#hashtag is not a heading\n", "", "text"),
    (b"\n  <!-- generated -->\n<HTML><p>x</p></HTML>", "page.md", "html"),
])
def test_sniff_text_kinds(data: bytes, name: str, kind: str) -> None:
    assert sniff(data, name) == kind


# --- Text and normalisation -----------------------------------------------------------------------------------


def test_text_decoding_bom_legacy_and_utf16() -> None:
    assert extract(b"\xef\xbb\xbfcaf\xc3\xa9 menu").text == "café menu"
    assert extract("naïve résumé".encode("utf-16")).text == "naïve résumé"
    assert extract("Größe – ok".encode("cp1252")).text == "Größe – ok"


def test_text_is_normalised() -> None:
    raw = b"Line one \r\nLine\ttwo\x07\x7f here\rLine   three\r\n\r\n\r\n\r\n  indented\x1b item  \r\n"
    extracted = extract(raw, "notes.txt")
    assert (extracted.type, extracted.pages, extracted.page_count) == ("text", [], 0)
    assert extracted.text == "Line one\nLine two here\nLine three\n\n  indented item"


def test_markdown_is_kept_as_written() -> None:
    source = "# Guide\n\n- item one\n  - nested item\n\n```\ncode  block\n```\n"
    extracted = extract(source.encode(), "guide.md")
    assert extracted.type == "markdown"
    assert extracted.text == "# Guide\n\n- item one\n  - nested item\n\n```\ncode block\n```"


def test_normalise_text_rules() -> None:
    assert normalise_text("cafe\u0301") == "café"
    assert normalise_text("nul\x00 and\x1b escape\x9b") == "nul and escape"
    assert normalise_text("  a \t  b  \n   c  ") == "a b\nc"
    assert normalise_text("x\n\n\n\n\ny\fz\x85w") == "x\n\ny\nz\nw"
    assert normalise_text("exam-\nple and Jean-\nPaul, co-\n2", hyphens=True) == "example and Jean-\nPaul, co-\n2"
    assert normalise_text("exam-\nple") == "exam-\nple"
    assert normalise_text("    code  here", indent=True) == "code here"
    assert normalise_text("a\n    code  here", indent=True) == "a\n    code here"


@pytest.mark.parametrize("data", [b"", b"  \r\n\t\n  ", b"\xef\xbb\xbf\n\n"])
def test_blank_text_has_no_text(data: bytes) -> None:
    with pytest.raises(FileHasNoText, match="empty"):
        extract(data, "empty.txt")


# --- Chunking -------------------------------------------------------------------------------------------------


def test_count_tokens_is_exact() -> None:
    assert count_tokens("") == 0
    assert count_tokens("hello world") == 2
    assert count_tokens("tiktoken is great!") == 6
    assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10
    assert count_tokens(" " * 128) == 1


@pytest.mark.parametrize("text", [
    prose(3000, seed=1),
    "ça   va?\n\n\t 你好世界 🎉🎉 naïve café Ünïcödé straße — 東京 の 夜 。 " * 8,
    "    indented\n        code()\n" * 20,
    "x" * 2000,
    " " * 300 + "a",
    "http://example.com/a?b=c&d=e 3.14159 1,000,000 ERR-4471 " * 10,
])
def test_token_counts_agree_with_the_splitters_tokenizer(text: str) -> None:
    # The splitter leaves a text whole exactly when it fits the capacity: the count is the least that fits.
    tokens = count_tokens(text)
    fits = TextSplitter.from_tiktoken_model(TOKENIZER_MODEL, capacity=tokens, trim=False).chunks(text)
    short = TextSplitter.from_tiktoken_model(TOKENIZER_MODEL, capacity=tokens - 1, trim=False).chunks(text)
    assert len(fits) == 1 and len(short) > 1


def test_large_text_chunks_are_bounded_overlapping_and_cover_the_text() -> None:
    text = prose(2_000_000, sentences=(40, 120))
    extracted = extract(text.encode(), "big.txt")
    assert extracted.text == text

    started = time.perf_counter()
    chunks = chunk(extracted, chunk_tokens=512, overlap_tokens=64)
    print(f"\n{len(text)} chars -> {len(chunks)} chunks in {time.perf_counter() - started:.2f}s")

    sample = text[:100_000]
    tokens_per_char = sum(count_tokens(p) for p in sample.split("\n\n")) / len(sample)
    expected = len(text) * tokens_per_char / (512 - 64)
    assert 0.8 * expected <= len(chunks) <= 1.25 * expected
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text)
    for c in chunks:
        assert c.text == text[c.char_start:c.char_end]
        assert 0 < c.tokens <= 512
        assert (c.page, c.page_end) == (None, None)
    overlapping = 0
    for previous, following in itertools.pairwise(chunks):
        assert previous.char_start < following.char_start
        if following.char_start < previous.char_end:
            overlapping += 1
        else:
            assert text[previous.char_end:following.char_start] == "\n\n"
    print(f"{overlapping} of {len(chunks) - 1} boundaries overlap")
    assert overlapping > 0.5 * (len(chunks) - 1)
    assert sum(c.tokens for c in chunks) / len(chunks) > 400


def test_chunk_tokens_match_a_recount() -> None:
    chunks = chunk(plain(prose(20_000, seed=11)), chunk_tokens=64, overlap_tokens=8)
    assert len(chunks) > 20
    assert all(c.tokens == count_tokens(c.text) <= 64 for c in chunks)


def test_non_ascii_offsets_are_characters() -> None:
    text = ("Ünïcödé straße — 東京 の 夜 。 " * 40 + "\n\n") * 10
    extracted = extract(text.encode(), "u.txt")
    chunks = chunk(extracted, chunk_tokens=32, overlap_tokens=4)
    assert len(chunks) > 10
    assert all(extracted.text[c.char_start:c.char_end] == c.text for c in chunks)


def test_markdown_chunks() -> None:
    source = "\n\n".join(f"## Section {n}\n\n{prose(600, seed=n)}" for n in range(8))
    extracted = extract(source.encode(), "doc.md")
    chunks = chunk(extracted, chunk_tokens=160, overlap_tokens=0)
    assert len(chunks) >= 8
    assert all(extracted.text[c.char_start:c.char_end] == c.text and c.tokens <= 160 for c in chunks)
    assert sum(c.text.startswith("## Section") for c in chunks) == 8


def test_too_many_chunks() -> None:
    extracted = plain(prose(3_000))
    expected = len(chunk(extracted, chunk_tokens=32, overlap_tokens=0))
    assert expected > 3
    with pytest.raises(TooManyChunks) as caught:
        chunk(extracted, chunk_tokens=32, overlap_tokens=0, max_chunks=3)
    assert caught.value.extra == {"chunks": expected, "limit": 3} and caught.value.status == 413
    with pytest.raises(TooManyChunks, match="at least 1 chunks"):
        chunk(extracted, chunk_tokens=32, overlap_tokens=0, max_chunks=0)


def test_chunk_arguments_and_empty_text() -> None:
    assert chunk(plain("")) == []
    assert chunk(plain("One short line.")) == [
        Chunk(seq=0, text="One short line.", char_start=0, char_end=15, page=None, page_end=None, tokens=4)]
    for tokens, overlap in ((64, 64), (64, 65), (64, -1)):
        with pytest.raises(ValueError, match="overlap_tokens"):
            chunk(plain("text"), chunk_tokens=tokens, overlap_tokens=overlap)


def test_page_lookup_skips_empty_pages() -> None:
    text = "alpha page text\n\nomega page text"
    extracted = Extracted(type="pdf", text=text, page_count=3,
                          pages=[Page(1, 0, 15), Page(2, 15, 15), Page(3, 17, 32)])
    chunks = chunk(extracted, chunk_tokens=4, overlap_tokens=0)
    assert [(c.text, c.page, c.page_end) for c in chunks] == [("alpha page text", 1, 1), ("omega page text", 3, 3)]
