"""Draw one trace's spans as a waterfall: SVG, then PNG with headless Chromium.

The spans come from the export test (tests/test_tracing_export.py), which writes them
when ``TRACE_WATERFALL`` names a file::

    TRACE_WATERFALL=/tmp/trace.json .venv/bin/python -m pytest -q \\
        tests/test_tracing_export.py -k one_event
    .venv/bin/python docs/tracing/waterfall.py /tmp/trace.json docs/tracing/waterfall.png
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from html import escape
from pathlib import Path
from typing import Any

WIDTH, ROW, LABEL, PAD, RIGHT = 1100, 26, 220, 16, 90
COLOURS = {
    "hooklane.ingest": "#4e79a7",
    "hooklane.route": "#59a14f",
    "hooklane.park": "#b07aa1",
    "hooklane.parked": "#d4a6c8",
}


def colour(span: dict[str, Any]) -> str:
    if span["name"] == "hooklane.deliver":
        return "#e15759" if span["attributes"].get("hooklane.outcome") != "success" else "#f28e2b"
    return COLOURS.get(span["name"], "#9c755f")


def label(span: dict[str, Any]) -> str:
    attributes = span["attributes"]
    if span["name"] == "hooklane.deliver":
        text = f"deliver #{attributes.get('hooklane.attempt')}"
        if attributes.get("hooklane.task_kind") == "redelivery":
            text = "deliver (replay)"
        elif "hooklane.parked_s" in attributes:
            text += " (backlog)"
        return f"{text}  {attributes.get('http.response.status_code', '')}"
    return span["name"].removeprefix("hooklane.")


def svg(spans: list[dict[str, Any]]) -> str:
    spans = sorted(spans, key=lambda s: s["start_ns"])
    start = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    scale = (WIDTH - LABEL - 2 * PAD - RIGHT) / max(end - start, 1)
    height = PAD * 2 + ROW * (len(spans) + 2)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
        ' font-family="DejaVu Sans, sans-serif" font-size="13">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{PAD}" y="{PAD + 14}" font-weight="bold">One event, one trace:'
        f" {escape(spans[0]['attributes'].get('hooklane.event_id', ''))[:36]}</text>",
    ]
    seconds = (end - start) / 1e9
    for tick in range(int(seconds) + 1):
        x = LABEL + PAD + tick * 1e9 * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="{PAD + ROW}" x2="{x:.1f}" y2="{height - PAD}"'
            ' stroke="#ddd"/>'
            f'<text x="{x + 3:.1f}" y="{PAD + ROW + 12}" fill="#888">{tick} s</text>'
        )
    for row, span in enumerate(spans, start=2):
        y = PAD + row * ROW
        x = LABEL + PAD + (span["start_ns"] - start) * scale
        width = max((span["end_ns"] - span["start_ns"]) * scale, 3)
        took = (span["end_ns"] - span["start_ns"]) / 1e6
        parts.append(
            f'<text x="{PAD}" y="{y + 15}">{escape(label(span))}</text>'
            f'<rect x="{x:.1f}" y="{y + 3}" width="{width:.1f}" height="{ROW - 8}" rx="3"'
            f' fill="{colour(span)}"/>'
            f'<text x="{x + width + 4:.1f}" y="{y + 15}" fill="#555">{took:,.1f} ms</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def main(source: str, target: str) -> None:
    drawing = svg(json.loads(Path(source).read_text()))
    height = int(drawing.split('height="', 1)[1].split('"', 1)[0])
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "waterfall.svg"
        page.write_text(drawing)
        subprocess.run(
            [
                "/usr/bin/chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--screenshot={Path(target).resolve()}",
                f"--window-size={WIDTH},{height}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
