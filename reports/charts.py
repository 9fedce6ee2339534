"""Charts drawn on the server as SVG: no script, no CDN, no inline style (the CSP allows none).

Readable without colour: bar series are told apart by fill pattern (solid, hatched,
dotted) and line series by dash pattern and marker shape, each named in a legend and
at the end of its line. The page puts the same numbers in a table next to each chart.
"""

from __future__ import annotations

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from reports.trends import Trend

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 44, 150, 16, 46
INK = "#1b1f24"
FILLS = ("solid", "hatch", "dots")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "1 5")
MARKERS = ("circle", "square", "triangle", "diamond", "cross")


def _scale(maximum: int) -> tuple[int, int]:
    """A round top for the y axis and its tick step."""
    if maximum <= 0:
        return 4, 1
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 25000, 50000, 100000):
        if maximum <= step * 5:
            return step * -(-maximum // step), step
    step = 10 ** len(str(maximum))
    return step * -(-maximum // step), step // 5


def _defs(chart_id: str) -> str:
    return (
        "<defs>"
        f'<pattern id="{chart_id}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)">'
        f'<rect width="6" height="6" fill="#ffffff"/>'
        f'<line x1="0" y1="0" x2="0" y2="6" stroke="{INK}" stroke-width="2.5"/>'
        "</pattern>"
        f'<pattern id="{chart_id}-dots" width="5" height="5" patternUnits="userSpaceOnUse">'
        f'<rect width="5" height="5" fill="#ffffff"/><circle cx="2.5" cy="2.5" r="1.3" fill="{INK}"/>'
        "</pattern>"
        "</defs>"
    )


def _fill(chart_id: str, index: int) -> str:
    kind = FILLS[index % len(FILLS)]
    return INK if kind == "solid" else f"url(#{chart_id}-{kind})"


def _open(chart_id: str, title: str, description: str) -> str:
    return format_html(
        '<svg class="chart" id="{0}" viewBox="0 0 {1} {2}" width="100%" role="img" '
        'aria-labelledby="{0}-title {0}-desc" xmlns="http://www.w3.org/2000/svg">'
        '<title id="{0}-title">{3}</title><desc id="{0}-desc">{4}</desc>',
        chart_id,
        WIDTH,
        HEIGHT,
        title,
        description,
    )


def _axes(top: int, step: int, labels: list[str], every: int) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = []
    for value in range(0, top + 1, step):
        y = TOP + plot_h - plot_h * value / top
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#c8ccd2" stroke-width="1"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="{INK}">{value}</text>'
        )
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    for index, label in enumerate(labels):
        if index % every and index != len(labels) - 1:
            continue
        x = LEFT + slot * (index + 0.5)
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11" fill="{INK}">'
            f"{escape(_short(label))}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
        f'stroke="{INK}" stroke-width="1.5"/>'
    )
    return parts


def _short(label: str) -> str:
    # ISO days print as MM-DD under the axis; the table has the full dates.
    return label[5:] if len(label) == 10 and label[4] == "-" else label


def _legend(items: list[str]) -> list[str]:
    parts = []
    for index, item in enumerate(items):
        y = TOP + 8 + index * 20
        parts.append(f'<text x="{WIDTH - RIGHT + 34}" y="{y + 4}" font-size="11" fill="{INK}">{escape(item)}</text>')
    return parts


def bar_chart(chart_id: str, trend: Trend, *, title: str, description: str, every: int = 1) -> SafeString:
    """Stacked bars, one per label; each series in its own fill pattern, named in the legend."""
    totals = [sum(s.values[i] for s in trend.series) for i in range(len(trend.labels))]
    top, step = _scale(max(totals, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(trend.labels))
    parts = [_open(chart_id, title, description), _defs(chart_id), *_axes(top, step, trend.labels, every)]
    for index in range(len(trend.labels)):
        base = float(TOP + plot_h)
        for number, series in enumerate(trend.series):
            value = series.values[index]
            if not value:
                continue
            h = plot_h * value / top
            base -= h
            parts.append(
                f'<rect x="{LEFT + slot * index + slot * 0.15:.1f}" y="{base:.1f}" width="{slot * 0.7:.1f}" '
                f'height="{h:.1f}" fill="{_fill(chart_id, number)}" stroke="{INK}" stroke-width="1">'
                f"<title>{escape(trend.labels[index])}: {escape(series.name)} {value}</title></rect>"
            )
    for number in range(len(trend.series)):
        y = TOP + 8 + number * 20
        parts.append(
            f'<rect x="{WIDTH - RIGHT + 12}" y="{y - 6}" width="16" height="12" fill="{_fill(chart_id, number)}" '
            f'stroke="{INK}" stroke-width="1"/>'
        )
    parts.extend(_legend([s.name for s in trend.series]))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label is escaped above, numbers are ours


def _marker(kind: str, x: float, y: float) -> str:
    if kind == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#ffffff" stroke="{INK}" stroke-width="1.5"/>'
    if kind == "square":
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{INK}"/>'
    if kind == "triangle":
        return f'<path d="M{x:.1f} {y - 4.5:.1f} L{x + 4:.1f} {y + 3:.1f} L{x - 4:.1f} {y + 3:.1f} Z" fill="{INK}"/>'
    if kind == "diamond":
        return (
            f'<path d="M{x:.1f} {y - 4.5:.1f} L{x + 4.5:.1f} {y:.1f} L{x:.1f} {y + 4.5:.1f} L{x - 4.5:.1f} {y:.1f} Z" '
            f'fill="#ffffff" stroke="{INK}" stroke-width="1.5"/>'
        )
    return (
        f'<path d="M{x - 4:.1f} {y - 4:.1f} L{x + 4:.1f} {y + 4:.1f} '
        f'M{x + 4:.1f} {y - 4:.1f} L{x - 4:.1f} {y + 4:.1f}" '
        f'stroke="{INK}" stroke-width="1.5"/>'
    )


def line_chart(chart_id: str, trend: Trend, *, title: str, description: str, every: int = 1) -> SafeString:
    """One line per series, each with its own dash pattern and marker shape, named in the legend."""
    top, step = _scale(max((v for s in trend.series for v in s.values), default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(trend.labels))
    parts = [_open(chart_id, title, description), *_axes(top, step, trend.labels, every)]
    for number, series in enumerate(trend.series):
        points = [
            (LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * value / top) for i, value in enumerate(series.values)
        ]
        dash = DASHES[number % len(DASHES)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline points="{path}" fill="none" stroke="{INK}" stroke-width="2"{dash_attr}/>')
        marker = MARKERS[number % len(MARKERS)]
        parts.extend(_marker(marker, x, y) for x, y in points[:: max(1, every)])
        y = TOP + 8 + number * 20
        parts.append(
            f'<line x1="{WIDTH - RIGHT + 8}" y1="{y}" x2="{WIDTH - RIGHT + 30}" y2="{y}" '
            f'stroke="{INK}" stroke-width="2"{dash_attr}/>'
        )
        parts.append(_marker(marker, WIDTH - RIGHT + 19, y))
    parts.extend(_legend([s.name for s in trend.series]))
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every label is escaped above, numbers are ours
