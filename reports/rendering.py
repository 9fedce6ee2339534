"""Reports as files: CSV streamed row by row, PDF drawn page by page with ReportLab.

Both read the report's rows once, as they come, so memory stays bounded whatever the
number of rows. The PDF is black on white with ruled rows (it prints, and it reads
without colour), repeats the column titles on every page, and prints on every page the
audit head (sequence and hash) the report was built from, so a printed page can be
checked against the trail later (``GET /api/v1/audit/verify/?expect_seq=&expect_hash=``).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Sequence
from typing import IO, Any

from django.http import FileResponse, StreamingHttpResponse
from reportlab.lib.pagesizes import A4, landscape
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas

from audit.export import csv_stream
from reports.building import Report
from reports.selectors import Column

PAGE = landscape(A4)
MARGIN = 28.0
FONT, BOLD = "Helvetica", "Helvetica-Bold"
SIZE = 7.5
LINE = 9.0  # one line of a cell
ROW_GAP = 4.0
MAX_LINES = 3
# Kept in memory up to this size, then spilled to a temporary file.
SPOOL_BYTES = 8 * 1024 * 1024


def _headers(response: StreamingHttpResponse | FileResponse, report: Report) -> None:
    response["X-BYOK-Audit-Head"] = f"{report.head_seq}:{report.head_hash}"
    response["Cache-Control"] = "no-store"


def csv_response(report: Report) -> StreamingHttpResponse:
    """The report as a streamed CSV download; the audit head is in ``X-BYOK-Audit-Head``."""
    names = report.csv_columns
    body = csv_stream(names, ([row.get(name) for name in names] for row in report.rows))
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{report.filename_stem}.csv"'
    _headers(response, report)
    return response


def pdf_response(report: Report) -> FileResponse:
    """The report as a PDF download, drawn into a spooled temporary file."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - FileResponse closes it
    write_pdf(report, spool)
    spool.seek(0)
    response = FileResponse(
        spool, content_type="application/pdf", as_attachment=True, filename=f"{report.filename_stem}.pdf"
    )
    _headers(response, report)
    return response


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    # The PDF's standard fonts cover Latin-1: other characters would print as boxes.
    return str(value).replace("→", "->").encode("latin-1", "replace").decode("latin-1")


def _fitting(text: str, width: float, font: str) -> int:
    """How many leading characters of ``text`` fit ``width`` (binary search: widths only grow with length)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if stringWidth(text[:middle], font, SIZE) <= width:
            low = middle
        else:
            high = middle - 1
    return low


def _fit(text: str, width: float, font: str = FONT) -> str:
    if stringWidth(text, font, SIZE) <= width:
        return text
    return text[: _fitting(text, width - stringWidth("...", font, SIZE), font)] + "..."


def _wrap(text: str, width: float, font: str = FONT) -> list[str]:
    """``text`` in lines that fit ``width`` (broken after a space, hyphen or slash where possible), at most
    MAX_LINES; a longer text ends in "..."."""
    lines: list[str] = []
    while text and len(lines) < MAX_LINES:
        if stringWidth(text, font, SIZE) <= width:
            lines.append(text)
            return lines
        cut = max(1, _fitting(text, width, font))
        soft = max(text.rfind(" ", 0, cut), text.rfind("-", 0, cut), text.rfind("/", 0, cut))
        if soft > cut // 2:
            cut = soft + 1
        lines.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        lines[-1] = _fit(lines[-1] + text, width, font)
    return lines or [""]


class _Pages:
    """Draws rows top to bottom, starting a new page (with the report's heading) when one is full."""

    def __init__(self, report: Report, out: IO[bytes]) -> None:
        self.report = report
        self.canvas = Canvas(out, pagesize=PAGE, pageCompression=1)
        self.canvas.setTitle(f"{report.title} - BYOK Portal")
        self.canvas.setAuthor("BYOK Portal")
        self.width = PAGE[0] - 2 * MARGIN
        self.page = 0
        self.y = 0.0
        self.x = self._positions(report.columns)

    def _positions(self, columns: Sequence[Column]) -> list[tuple[float, float]]:
        total = sum(column.width for column in columns)
        x, out = MARGIN, []
        for column in columns:
            width = self.width * column.width / total
            out.append((x, width - 4))
            x += width
        return out

    def _heading(self) -> None:
        self.page += 1
        c, report = self.canvas, self.report
        top = PAGE[1] - MARGIN
        c.setFont(BOLD, 13)
        c.drawString(MARGIN, top - 12, f"BYOK Portal - {report.title}")
        c.setFont(FONT, 8)
        c.drawRightString(PAGE[0] - MARGIN, top - 12, f"Page {self.page}")
        c.drawString(MARGIN, top - 26, f"Generated {report.generated_at:%Y-%m-%d %H:%M:%S} UTC - {_text(report.scope)}")
        c.drawString(MARGIN, top - 37, f"Built from audit head: sequence {report.head_seq}, hash {report.head_hash}")
        self.y = top - 54
        c.setFont(BOLD, SIZE)
        titles = [_wrap(column.title, width, BOLD) for column, (_, width) in zip(report.columns, self.x, strict=True)]
        for lines, (x, _) in zip(titles, self.x, strict=True):
            for number, line in enumerate(lines):
                c.drawString(x, self.y - number * LINE, line)
        self.y -= (max(len(lines) for lines in titles) - 1) * LINE
        c.setLineWidth(0.8)
        c.line(MARGIN, self.y - 3, PAGE[0] - MARGIN, self.y - 3)
        c.setLineWidth(0.25)
        c.setFont(FONT, SIZE)
        self.y -= LINE + ROW_GAP

    def row(self, values: Sequence[Any]) -> None:
        cells = [_wrap(_text(value), width) for value, (_, width) in zip(values, self.x, strict=True)]
        height = max(len(lines) for lines in cells) * LINE
        if self.page == 0 or self.y - height < MARGIN + LINE:
            if self.page:
                self.canvas.showPage()
            self._heading()
        for lines, (x, _) in zip(cells, self.x, strict=True):
            for number, line in enumerate(lines):
                self.canvas.drawString(x, self.y - number * LINE, line)
        bottom = self.y - height + LINE - 3
        self.canvas.line(MARGIN, bottom, PAGE[0] - MARGIN, bottom)
        self.y -= height + ROW_GAP

    def finish(self, rows: int) -> None:
        if self.page == 0:
            self._heading()
        self.canvas.setFont(BOLD, 8)
        self.canvas.drawString(MARGIN, max(self.y - 6, MARGIN), f"{rows} row(s). End of report.")
        self.canvas.save()


def write_pdf(report: Report, out: IO[bytes]) -> int:
    """Draw ``report`` into ``out``; returns the number of rows."""
    pages = _Pages(report, out)
    names = [column.name for column in report.columns]
    count = 0
    for row in report.rows:
        pages.row([row.get(name) for name in names])
        count += 1
    pages.finish(count)
    return count


def response(report: Report, fmt: str) -> StreamingHttpResponse | FileResponse:
    return pdf_response(report) if fmt == "pdf" else csv_response(report)
