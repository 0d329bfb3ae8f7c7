"""Assemble and write the self-contained HTML page: the data as inline JSON, the stylesheet and
the script (``assets/``) inline too, so the one file works offline and needs no CDN.

spectro recognises a page as its own by the generator tag in its first bytes
(:data:`GENERATOR`); an existing file without it is the user's and is never replaced.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path

from .collect import ReportError

__all__ = ["GENERATOR", "REPORT_NAME", "render", "write_page", "is_spectro_page"]

GENERATOR = '<meta name="generator" content="spectro report/1">'
REPORT_NAME = "report.html"

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head>
{generator}
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>{css}</style>
</head><body>
<header><h1>{title}</h1><div class="sub">{subtitle}</div>
<nav>{nav}</nav></header>
<main></main>
<div id="tip"></div>
<script type="application/json" id="data">{data}</script>
<script>{js}</script>
</body></html>
"""

_NAV = {"nn": [("text", "χ over the text"), ("domains", "components × domains"), ("pca", "principal modes"),
               ("llc", "LLC & traces"), ("settings", "settings & machine")],
        "ising": [("lattice", "lattice"), ("maps", "χ maps"), ("exact", "exact comparison"), ("settings", "settings & machine")],
        "compare": [("runs", "runs"), ("stability", "agreement"), ("text", "text"), ("domains", "domains"), ("maps", "maps"),
                    ("llc", "LLC")]}


def _asset(name: str) -> str:
    return resources.files("spectro.report").joinpath("assets", name).read_text(encoding="utf-8")


def render(data: dict) -> str:
    """The HTML page of report data (:func:`spectro.report.collect.collect` or a comparison)."""
    payload = json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    payload = payload.replace("</", "<\\/").replace("<!--", "<\\u0021--")  # cannot end the script element
    if data["kind"] == "compare":
        title = f"spectro: {data['a']['name']} vs {data['b']['name']}"
        subtitle = f"A = {html.escape(data['a']['folder'])}<br>B = {html.escape(data['b']['folder'])}"
    else:
        what = "network" if data["kind"] == "nn" else "walled Ising"
        title = f"spectro {what} run: {data['name']}"
        subtitle = html.escape(data["folder"])
        subtitle += f" · observable {html.escape(data['observable'])}" if data["kind"] == "nn" else ""
    nav = " ".join(f'<a href="#{k}">{html.escape(v)}</a>' for k, v in _NAV[data["kind"]])
    return _TEMPLATE.format(generator=GENERATOR, title=html.escape(title), subtitle=subtitle,
                            nav=nav, css=_asset("report.css"), js=_asset("report.js").replace("</", "<\\/"), data=payload)


def is_spectro_page(path: Path) -> bool:
    """True when ``path`` is a page this module wrote (its generator tag in the first 512 bytes)."""
    try:
        with open(path, "rb") as fh:
            return GENERATOR.encode() in fh.read(512)
    except OSError:
        return False


def write_page(path: str | Path, data: dict) -> Path:
    """Write the page atomically; an existing file at ``path`` that spectro did not write is refused."""
    from ..io import write_text

    path = Path(path)
    if path.is_dir():
        raise ReportError(f"{path} is a folder; give a file name for the report (e.g. {path / REPORT_NAME})")
    if path.exists() and not is_spectro_page(path):
        raise ReportError(f"{path} exists and is not a spectro report; spectro will not replace it: choose another --out")
    if not path.parent.is_dir():
        raise ReportError(f"cannot write {path}: folder {path.parent} does not exist")
    write_text(path, render(data))
    return path
