"""Text extraction for file processing: read a file's real type from its bytes, then its normalised text.

    sniff(data, filename)  -> "pdf" | "docx" | "html" | "markdown" | "text"     (or UnsupportedFileType)
    extract(data, filename) -> Extracted(type, text, pages, page_count, title)

The type comes from the content, never from the name: `%PDF-` in the first
KiB is a PDF, a ZIP holding `word/document.xml` is a DOCX, an OLE compound
file is an encrypted (or legacy .doc) Office file, and anything else must
decode as text: UTF-8, UTF-16/32 with a BOM, or, without NUL bytes and when
nearly every character is printable, cp1252 (latin-1 for its five undefined
bytes). Decoded text is HTML when it opens with a doctype, `<html>`,
`<head>` or `<body>` tag. The filename is only consulted to tell markdown
from plain text: `.md`/`.markdown`/… is markdown and `.txt`/`.text` is plain
text whatever they hold; for any other name the text is markdown when its
first 8 KiB have an ATX heading line (`# Title`) or a code fence. Binary
content of another type is named with `filetype` in the error
("the content is an image of type PNG").

Each type has its reader: `pypdf` for PDFs (page by page, so chunks can cite
pages; an empty user password is tried before calling a PDF encrypted),
`python-docx` for DOCX (paragraphs and table rows in body order, content
controls included), `selectolax` for HTML (the `<main>`/`<article>` content
without navigation, banners, footers, scripts or forms, one line per block).
Markdown and text are kept as written.

All text goes through `normalise_text`: NFC, `\\n` line ends, no control
characters but tab and newline, single spaces between words, no trailing
spaces, at most one blank line in a row. Markdown and plain text keep their
lines' indentation (nested lists and code stay readable); generated text
(PDF, DOCX, HTML) loses it, and PDFs also rejoin words hyphenated across
lines. A document whose text is blank raises `FileHasNoText`, whatever its
type.

Extraction is synchronous CPU work without shared state: the worker runs it
in a thread.
"""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from typing import Any, Literal

import filetype
import msgspec
from docx.package import Package
from docx.table import Table
from docx.text.paragraph import Paragraph
from pypdf import PasswordType, PdfReader
from selectolax.lexbor import LexborHTMLParser, LexborNode

from jobs.errors import FileCorrupt, FileEncrypted, FileHasNoText, TooManyPages, UnsupportedFileType

DocType = Literal["pdf", "docx", "html", "markdown", "text"]

#: What `UnsupportedFileType` says is supported.
SUPPORTED = "plain text, markdown, HTML, PDF or DOCX"

_PDF_MAGIC = b"%PDF-"
_PDF_WINDOW = 1024
_OLE_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: Longest BOM first: the UTF-32 LE BOM starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_HEAD_CHARS = 8192
_PRINTABLE_SAMPLE = 65_536
_MAX_UNPRINTABLE = 0.05
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffe\uffff]")

_MARKUP_PROLOGUE = r"\A\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
_HTML_START = re.compile(_MARKUP_PROLOGUE + r"<(?:!doctype\s+html|html|head|body)[\s>/]", re.I | re.S)
#: Text-encoded formats that are not documents we index.
_TEXT_LOOKALIKES = (
    (re.compile(r"\A\s*\{\\rtf"), "an RTF document"),
    (re.compile(r"\A%!PS"), "a PostScript file"),
    (re.compile(_MARKUP_PROLOGUE + r"(?:<!doctype\s+svg[^>]*>\s*)?<svg[\s>]", re.I | re.S), "an SVG image"),
)
_MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown", ".mkd", ".mkdn")
_TEXT_SUFFIXES = (".txt", ".text")
_MARKDOWN_SYNTAX = re.compile(r"^(?:#{1,6}[ \t]+\S|```|~~~)", re.M)

_LINE_BREAKS = re.compile(r"\r\n?|[\v\f\x1c-\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")
_SPACE_RUNS = re.compile(r"[^\S\n]+")
_SPACES_AROUND_BREAKS = re.compile(r" ?\n ?")
_TRAILING_SPACES = re.compile(r"[^\S\n]+(?=\n|\Z)")
_INNER_SPACE_RUNS = re.compile(r"(?<=\S)[^\S\n]+")
_WHITESPACE_RUNS = re.compile(r"\s+")
_HYPHENATED = re.compile(r"(\w)-\n(\w)")
_BLANK_LINES = re.compile(r"\n{3,}")
_REASON_CHARS = 200

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
#: Charsets that browsers read as windows-1252 (by their Python codec names).
_READ_AS_CP1252 = {"iso8859-1": "cp1252", "ascii": "cp1252"}
_DROPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "nav", "aside", "form", "iframe",
                           "head", "title", "object", "canvas", "button", "select", "dialog"})
_DROPPED_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "complementary"})
#: A `<header>`/`<footer>` inside one of these belongs to it (an article's title, say), not to the page.
_SECTIONING = frozenset({"article", "aside", "main", "nav", "section"})
_PAGE_CHROME = frozenset({"header", "footer"})
_PARAGRAPH_TAGS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "figure", "table",
                             "ul", "ol", "dl", "hr", "section", "article", "main", "details", "fieldset"})
_LINE_TAGS = frozenset({"div", "li", "dt", "dd", "caption", "figcaption", "summary", "legend", "address",
                        "header", "footer", "center", "hgroup", "menu", "dir", "body"})
_CELL_TAGS = frozenset({"td", "th"})

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_W_P, _W_TBL, _W_SDT, _W_SDT_CONTENT, _W_CUSTOM_XML = (f"{_W}p", f"{_W}tbl", f"{_W}sdt", f"{_W}sdtContent",
                                                      f"{_W}customXml")


class Page(msgspec.Struct, frozen=True):
    """One PDF page's span in `Extracted.text` (`text[start:end]`; empty pages have `start == end`)."""

    number: int
    start: int
    end: int


class Extracted(msgspec.Struct, frozen=True, kw_only=True):
    """A document's normalised text; a PDF's pages are joined by a blank line and each has its span."""

    type: DocType
    text: str
    pages: list[Page]
    page_count: int
    title: str | None = None


def sniff(data: bytes, filename: str = "") -> DocType:
    """The document type of `data`, read from the content (the name only tells markdown from plain text).

    Raises:
        UnsupportedFileType: the content is none of the supported types (an image, an archive, binary data, …).
        FileEncrypted: the content is an OLE compound file: an encrypted Office document or a legacy .doc.
        FileCorrupt: the content is a ZIP archive too damaged to list, or a DOCX without its main document.
    """
    return _sniff(data, filename)[0]


def extract(data: bytes, filename: str = "", *, max_pages: int = 2000) -> Extracted:
    """The normalised text of the document in `data` (see the module docstring for each type's rules).

    Raises:
        UnsupportedFileType: the content is none of the supported types.
        FileEncrypted: a PDF that needs a password, or an encrypted (or legacy binary) Office file.
        FileCorrupt: the document is damaged or not valid for the type its content claims.
        TooManyPages: a PDF with more than `max_pages` pages.
        FileHasNoText: the text is blank (an empty file, or a scanned PDF without a text layer).
    """
    kind, decoded = _sniff(data, filename)
    if kind == "pdf":
        return _extract_pdf(data, max_pages)
    if kind == "docx":
        return _extract_docx(data)
    if kind == "html":
        return _extract_html(data)
    text = normalise_text(decoded, indent=True)
    if not text:
        raise FileHasNoText("the file is empty or holds only whitespace", type=kind)
    return Extracted(type=kind, text=text, pages=[], page_count=0)


def normalise_text(text: str, *, indent: bool = False, hyphens: bool = False) -> str:
    """`text` in NFC with `\\n` line ends, no control characters (but tab and newline) and tidy whitespace.

    Runs of spaces and tabs become one space and lines lose their trailing spaces; `indent` keeps each line's
    leading whitespace as it is (else it goes too). `hyphens` rejoins words split across a line break
    (`exam-\\nple` -> `example`, only between lowercase letters). Three or more newlines become two, and the
    result is stripped.
    """
    text = unicodedata.normalize("NFC", text)
    text = _CONTROLS.sub("", _LINE_BREAKS.sub("\n", text))
    if indent:
        text = _INNER_SPACE_RUNS.sub(" ", _TRAILING_SPACES.sub("", text))
    else:
        text = _SPACES_AROUND_BREAKS.sub("\n", _SPACE_RUNS.sub(" ", text))
    if hyphens:
        text = _HYPHENATED.sub(_join_hyphenated, text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def _join_hyphenated(match: re.Match[str]) -> str:
    before, after = match[1], match[2]
    return before + after if before.islower() and after.islower() else match[0]


# --- Sniffing -------------------------------------------------------------------------------------------------


def _sniff(data: bytes, filename: str) -> tuple[DocType, str]:
    """The type, and for markdown and plain text the decoded content ("" for the others)."""
    if _PDF_MAGIC in data[:_PDF_WINDOW]:
        return "pdf", ""
    if data.startswith(_OLE_MAGIC):
        raise FileEncrypted("the content is an encrypted or legacy .doc Office file (an OLE compound file): "
                            "remove its password or save it as .docx", type="ole")
    if data.startswith(_ZIP_MAGICS):
        return _sniff_zip(data), ""
    text = _decode_text(data)
    if text is None:
        raise _unsupported(_describe_binary(data))
    head = text[:_HEAD_CHARS]
    for pattern, name in _TEXT_LOOKALIKES:
        if pattern.match(head):
            raise _unsupported(name)
    if _HTML_START.match(head):
        return "html", ""
    return ("markdown" if _is_markdown(head, filename) else "text"), text


def _is_markdown(head: str, filename: str) -> bool:
    """Markdown by name (`.md`, …), plain text by name (`.txt`), else by an ATX heading or code fence."""
    name = filename.lower()
    if name.endswith(_MARKDOWN_SUFFIXES):
        return True
    if name.endswith(_TEXT_SUFFIXES):
        return False
    return _MARKDOWN_SYNTAX.search(head) is not None


def _decode_text(data: bytes) -> str | None:
    """`data` as text (a BOM decides the encoding, else UTF-8, else cp1252), or None when it looks binary."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)
            except UnicodeDecodeError:
                return None
            return text if _mostly_printable(text) else None
    if b"\x00" in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = _decode_legacy(data)
    return text if _mostly_printable(text) else None


def _decode_legacy(data: bytes) -> str:
    """Windows-1252, the usual 8-bit text; latin-1 when a byte is undefined in cp1252 (latin-1 decodes all)."""
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _mostly_printable(text: str) -> bool:
    """Whether at most 5% of the first 64 Ki characters are control characters other than whitespace."""
    sample = text[:_PRINTABLE_SAMPLE]
    return len(_UNPRINTABLE.findall(sample)) <= _MAX_UNPRINTABLE * len(sample)


def _sniff_zip(data: bytes) -> DocType:
    """"docx" for a ZIP holding `word/document.xml`.

    Raises:
        FileCorrupt: the archive cannot be read, or it has Word parts but not the main document.
        UnsupportedFileType: another ZIP-based format (a spreadsheet, a presentation, an EPUB, a plain ZIP).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            mimetype = _zip_mimetype(archive) if "mimetype" in names else ""
    except Exception as exc:
        raise FileCorrupt(f"the content is a damaged ZIP archive (a truncated .docx?): {_reason(exc)}",
                          type="zip") from exc
    if "word/document.xml" in names:
        return "docx"
    if any(name.startswith("word/") for name in names):
        raise FileCorrupt("the .docx is missing its main document part (word/document.xml)", type="docx")
    raise _unsupported(_describe_zip(names, mimetype))


def _zip_mimetype(archive: zipfile.ZipFile) -> str:
    """The `mimetype` member of an OpenDocument or EPUB archive (its first 100 bytes)."""
    with archive.open("mimetype") as member:
        return member.read(100).decode("ascii", "replace").strip()


def _describe_zip(names: set[str], mimetype: str) -> str:
    if "xl/workbook.xml" in names:
        return "an Excel workbook (.xlsx)"
    if "ppt/presentation.xml" in names:
        return "a PowerPoint presentation (.pptx)"
    if mimetype:
        return f"a ZIP-based document of type {mimetype}"
    return "a ZIP archive"


def _describe_binary(data: bytes) -> str:
    """What the binary content is, as `filetype` names it (an image of type PNG, …)."""
    kind = filetype.guess(data[:8192])
    if kind is None:
        return "binary content of no supported type"
    noun = {"image": "an image", "video": "a video", "audio": "an audio file", "font": "a font"}
    what = noun.get(str(kind.mime).split("/")[0], "a binary file")
    return f"{what} of type {str(kind.extension).upper()} ({kind.mime})"


def _unsupported(what: str) -> UnsupportedFileType:
    return UnsupportedFileType(f"unsupported file type: the content is {what}; expected {SUPPORTED}",
                               detected=what)


def _reason(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__)[:_REASON_CHARS]


# --- PDF ------------------------------------------------------------------------------------------------------


def _extract_pdf(data: bytes, max_pages: int) -> Extracted:
    """A PDF's pages' text, each page's span, and its metadata title.

    Raises:
        FileEncrypted, FileCorrupt, TooManyPages, FileHasNoText: see `extract`.
    """
    reader = _open_pdf(data)
    count = _page_count(reader)
    if count > max_pages:
        raise TooManyPages(f"the PDF has {count} pages, more than the limit of {max_pages}",
                           pages=count, limit=max_pages)
    text, pages = _join_pages([_page_text(reader, number) for number in range(1, count + 1)])
    if not text:
        raise FileHasNoText("the PDF has no text layer: a scanned PDF needs OCR, which this platform does not do",
                            type="pdf", pages=count)
    return Extracted(type="pdf", text=text, pages=pages, page_count=count, title=_pdf_title(reader))


def _open_pdf(data: bytes) -> PdfReader:
    """A reader of the PDF, decrypted with the empty password if it is encrypted.

    Raises:
        FileCorrupt: pypdf cannot parse it.
        FileEncrypted: it needs a password (or a cipher pypdf cannot use).
    """
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:
        raise FileCorrupt(f"the PDF is damaged and cannot be read: {_reason(exc)}", type="pdf") from exc
    if encrypted:
        try:
            unlocked = reader.decrypt("") != PasswordType.NOT_DECRYPTED
        except Exception as exc:
            raise FileEncrypted(f"the PDF is encrypted and cannot be decrypted: {_reason(exc)}",
                                type="pdf") from exc
        if not unlocked:
            raise FileEncrypted("the PDF is password-protected: upload it without a password", type="pdf")
    return reader


def _page_count(reader: PdfReader) -> int:
    """The PDF's number of pages.

    Raises:
        FileCorrupt: the page tree is unreadable, or empty.
    """
    try:
        count = len(reader.pages)
    except Exception as exc:
        raise FileCorrupt(f"the PDF's page tree is damaged: {_reason(exc)}", type="pdf") from exc
    if count == 0:
        raise FileCorrupt("the PDF has no pages", type="pdf")
    return count


def _page_text(reader: PdfReader, number: int) -> str:
    """The normalised text of page `number` (1-based), its hyphenated line breaks rejoined.

    Raises:
        FileCorrupt: the page's content cannot be read.
    """
    try:
        text = reader.pages[number - 1].extract_text()
    except Exception as exc:
        raise FileCorrupt(f"page {number} of the PDF is damaged: {_reason(exc)}", type="pdf", page=number) from exc
    return normalise_text(text, hyphens=True)


def _join_pages(texts: list[str]) -> tuple[str, list[Page]]:
    """The pages' texts joined by blank lines (none around empty pages), and each page's span."""
    parts: list[str] = []
    pages: list[Page] = []
    length = 0
    for number, text in enumerate(texts, 1):
        if text and parts:
            parts.append("\n\n")
            length += 2
        parts.append(text)
        pages.append(Page(number, length, length + len(text)))
        length += len(text)
    return "".join(parts), pages


def _pdf_title(reader: PdfReader) -> str | None:
    try:
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except Exception:
        return None
    return _one_line(title) if isinstance(title, str) else None


def _one_line(text: str) -> str | None:
    """`text` with its whitespace collapsed to single spaces, or None if that leaves nothing."""
    return " ".join(normalise_text(text).split()) or None


# --- DOCX -----------------------------------------------------------------------------------------------------


def _extract_docx(data: bytes) -> Extracted:
    """A DOCX's paragraphs and tables in body order (blank lines between blocks), and its core title.

    Raises:
        FileCorrupt: python-docx cannot open it (broken XML, missing parts).
        FileHasNoText: it has no text.
    """
    try:
        document = Package.open(io.BytesIO(data)).main_document_part.document
        blocks = list(_docx_blocks(document.element.body, document))
        title = document.core_properties.title
    except Exception as exc:
        raise FileCorrupt(f"the .docx is damaged and cannot be read: {_reason(exc)}", type="docx") from exc
    text = normalise_text("\n\n".join(blocks))
    if not text:
        raise FileHasNoText("the document has no text", type="docx")
    return Extracted(type="docx", text=text, pages=[], page_count=0,
                     title=_one_line(title) if isinstance(title, str) else None)


def _docx_blocks(container: Any, parent: Any) -> Iterator[str]:
    """The text of each paragraph and table (rows on their own lines) among `container`'s children."""
    for child in container.iterchildren():
        if child.tag == _W_P:
            yield Paragraph(child, parent).text
        elif child.tag == _W_TBL:
            yield "\n".join(_table_rows(Table(child, parent)))
        elif child.tag == _W_SDT:
            content = child.find(_W_SDT_CONTENT)
            if content is not None:
                yield from _docx_blocks(content, parent)
        elif child.tag == _W_CUSTOM_XML:
            yield from _docx_blocks(child, parent)


def _table_rows(table: Table) -> Iterator[str]:
    """Each row's cells joined by " | " (a merged cell once; a nested table flattened into its cell)."""
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:
                continue
            previous = cell._tc
            cells.append(" ".join(" ".join(_docx_blocks(cell._tc, cell)).split()))
        yield " | ".join(cells)


# --- HTML -----------------------------------------------------------------------------------------------------


def _extract_html(data: bytes) -> Extracted:
    """The main content of an HTML page, one line per block, without the page's chrome; and its `<title>`.

    Raises:
        FileCorrupt: the markup is nested too deeply to walk.
        FileHasNoText: nothing is left once boilerplate is dropped.
    """
    tree = LexborHTMLParser(_decode_html(data))
    title_node = tree.css_first("title")
    title = _one_line(title_node.text()) if title_node is not None else None
    body = tree.body or tree.root
    try:
        roots = _content_roots(tree)
        text = normalise_text("\n\n".join(_html_text(root, _inside(root, _SECTIONING)) for root in roots))
        if not text and body is not None:
            text = normalise_text(_html_text(body, False))
    except RecursionError as exc:
        raise FileCorrupt("the HTML is nested too deeply to read", type="html") from exc
    if not text:
        raise FileHasNoText("the HTML page has no text besides navigation and page boilerplate", type="html")
    return Extracted(type="html", text=text, pages=[], page_count=0, title=title)


def _decode_html(data: bytes) -> str:
    """The markup decoded by its BOM, else its `<meta charset>`, else as UTF-8 (bad bytes replaced)."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(codec, "replace")
    return data.decode(_html_charset(data[:4096]), "replace")


def _html_charset(head: bytes) -> str:
    """The codec a `<meta>` declares (latin-1 and ASCII read as cp1252, as browsers do), else UTF-8."""
    match = _META_CHARSET.search(head)
    if match is None:
        return "utf-8"
    try:
        name = codecs.lookup(match[1].decode("ascii")).name
    except (LookupError, UnicodeDecodeError):
        return "utf-8"
    if name.startswith("utf-16") or name.startswith("utf-32"):
        return "utf-8"
    return _READ_AS_CP1252.get(name, name)


def _content_roots(tree: LexborHTMLParser) -> list[LexborNode]:
    """The `<main>` (or `[role=main]`), else the outermost `<article>`s, else the body."""
    main = tree.css_first("main, [role=main]")
    if main is not None:
        return [main]
    articles = [node for node in tree.css("article") if not _inside(node, frozenset({"article"}))]
    if articles:
        return articles
    root = tree.body or tree.root
    return [root] if root is not None else []


def _inside(node: LexborNode, tags: frozenset[str]) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag in tags:
            return True
        parent = parent.parent
    return False


def _html_text(root: LexborNode, in_section: bool) -> str:
    """The text under `root`: blocks on their own lines, table rows as "a | b", boilerplate skipped.

    `in_section` says `root` lies inside sectioning content, where a `<header>` is an article's, not the page's.
    """
    return _join_pieces(_html_pieces(root, in_section))


def _html_pieces(root: LexborNode, in_section: bool) -> Iterator[str | int]:
    """Text pieces in document order, and between them the line breaks blocks ask for (1: newline, 2: blank line).

    The walk keeps its own stack, so only tables nested in tables recurse.
    """
    stack: list[tuple[LexborNode, bool, bool] | int] = [(root, in_section, False)]
    while stack:
        item = stack.pop()
        if isinstance(item, int):
            yield item
            continue
        node, section, pre = item
        if node.is_text_node:
            raw = node.text_content or ""
            yield raw if pre else _WHITESPACE_RUNS.sub(" ", raw)
            continue
        tag = node.tag or ""
        if not node.is_element_node or _is_boilerplate(node, tag, section):
            continue
        if tag == "br":
            yield "\n"
        elif tag == "tr":
            yield from (1, _table_row(node, section), 1)
        else:
            breaks = 2 if tag in _PARAGRAPH_TAGS else 1 if tag in _LINE_TAGS else 0
            section, pre = section or tag in _SECTIONING, pre or tag == "pre"
            stack.append(breaks)
            stack.extend((child, section, pre) for child in reversed(list(node.iter(include_text=True))))
            stack.append(breaks)


def _join_pieces(pieces: Iterator[str | int]) -> str:
    """The pieces joined, each run of breaks becoming its largest one (whitespace between breaks dropped)."""
    out: list[str] = []
    pending = 0
    for piece in pieces:
        if isinstance(piece, int):
            pending = max(pending, piece)
        elif not pending:
            out.append(piece)
        elif piece.strip():
            out.append("\n" * pending + piece)
            pending = 0
    return "".join(out)


def _table_row(row: LexborNode, in_section: bool) -> str:
    """A table row's cells on one line, joined by " | "."""
    return " | ".join(" ".join(_html_text(cell, in_section).split()) for cell in row.iter() if cell.tag in _CELL_TAGS)


def _is_boilerplate(node: LexborNode, tag: str, in_section: bool) -> bool:
    """Scripts, navigation, forms, asides, hidden elements, and the page's own header and footer."""
    if tag in _DROPPED_TAGS or (tag in _PAGE_CHROME and not in_section):
        return True
    attributes = node.attributes
    return "hidden" in attributes or (attributes.get("role") or "").lower() in _DROPPED_ROLES
