"""Real documents built in memory for the file-processing tests (PDF, DOCX, PNG, ZIP, prose)."""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

import docx
from fpdf import FPDF

SENTENCES = (
    "The amber heron waits beside the river.",
    "The quartz falcon migrates at dawn.",
    "The cobalt otter sleeps under the ice.",
)
WORDS = ["river", "harbour", "falcon", "quartz", "signal", "ledger", "window", "market", "engine", "lantern",
         "orchard", "valley", "copper", "meadow", "archive", "bridge", "compass", "season", "theory", "village",
         "garden", "motion", "canvas", "the", "a", "of", "and", "to", "in", "is", "that", "for", "with", "was", "on",
         "by", "at", "from", "which", "have", "not", "but", "were"]
OLE_HEADER = bytes.fromhex("D0CF11E0A1B11AE1") + bytes(504)


def make_pdf(pages: list[str], *, title: str = "Field Notes", **encryption: object) -> bytes:
    """A PDF with one page per text (an empty text makes an empty page), optionally encrypted."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.set_title(title)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    if encryption:
        pdf.set_encryption(**encryption)  # type: ignore[arg-type]
    return bytes(pdf.output())


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Quarterly Report"
    document.add_heading("Harbour Operations", level=1)
    document.add_paragraph("The first paragraph describes the tides.")
    table = document.add_table(rows=3, cols=2)
    for row, (name, role) in enumerate([("Name", "Role"), ("Ada", "Pilot"), ("Grace", "Navigator")]):
        table.cell(row, 0).text = name
        table.cell(row, 1).text = role
    document.add_paragraph("The closing paragraph follows the table.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_png() -> bytes:
    """A valid 1x1 greyscale PNG."""
    def part(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + part(b"IHDR", header) + part(b"IDAT", zlib.compress(b"\x00\x00")) + part(b"IEND", b"")


def make_zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return out.getvalue()


def prose(target_chars: int, seed: int = 7, sentences: tuple[int, int] = (3, 7)) -> str:
    """Deterministic English-like paragraphs of `sentences` sentences, about `target_chars` long."""
    rng = random.Random(seed)
    paragraphs: list[str] = []
    size = 0
    while size < target_chars:
        made = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
                for _ in range(rng.randint(*sentences))]
        paragraphs.append(" ".join(made))
        size += len(paragraphs[-1]) + 2
    return "\n\n".join(paragraphs)
