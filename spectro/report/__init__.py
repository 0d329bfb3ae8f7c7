"""The HTML report of a results folder: one self-contained ``report.html`` (data, script and
style inline; no network) that shows what the run measured and how far to trust it.

* :func:`write_report` — ``FOLDER/report.html`` from a results folder (the jobs call it on their
  staged folder; ``spectro report DIR`` rebuilds it, also for folders of earlier formats).
* :func:`write_compare` — two runs side by side and their difference with combined error bars
  (``spectro report A B``).

The data come from :mod:`spectro.report.collect` (reading the typed results and reusing
:mod:`spectro.analysis`) and :mod:`spectro.report.compare`; :mod:`spectro.report.page` turns them
into the page. Flagged entries (docs/design.md §4) are hatched on the page, with their reason and
advice on hover, and a banner says how many there are.
"""

from __future__ import annotations

from pathlib import Path

from .collect import ReportError, collect
from .page import REPORT_NAME, is_spectro_page, render, write_page

__all__ = ["ReportError", "REPORT_NAME", "write_report", "write_compare", "collect", "render", "is_spectro_page"]


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of results folder ``folder`` to ``out`` (default ``folder/report.html``)."""
    folder = Path(folder)
    return write_page(folder / REPORT_NAME if out is None else Path(out), collect(folder))


def write_compare(a: str | Path, b: str | Path, out: str | Path) -> Path:
    """Write the page comparing results folders ``a`` and ``b`` to ``out``."""
    from .compare import collect_compare

    return write_page(Path(out), collect_compare(a, b))
