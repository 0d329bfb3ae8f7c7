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

__all__ = ["ReportError", "REPORT_NAME", "write_report", "report_for_job", "write_compare", "collect", "render",
           "is_spectro_page"]


def write_report(folder: str | Path, out: str | Path | None = None, *, shown_as: str | Path | None = None) -> Path:
    """Write the report of results folder ``folder`` to ``out`` (default ``folder/report.html``).
    ``shown_as``: the folder name the page shows (a job's final folder while it writes a stage)."""
    folder = Path(folder)
    data = collect(folder)
    if shown_as is not None:
        data["folder"] = str(Path(shown_as).resolve())
        if data["name"] == folder.name:
            data["name"] = Path(shown_as).name
    return write_page(folder / REPORT_NAME if out is None else Path(out), data)


def report_for_job(folder: str | Path, shown_as: str | Path | None = None) -> Path | None:
    """:func:`write_report` for a job that has just written ``folder``: a report that cannot be
    built never costs the run its results; it is one ``spectro: warning:`` line instead."""
    import sys

    final = Path(shown_as if shown_as is not None else folder) / REPORT_NAME
    if final.exists() and not is_spectro_page(final):
        print(f"spectro: warning: {final} is not a spectro report; it is kept and no report was written (write one "
              f"elsewhere with: spectro report {final.parent} --out FILE)", file=sys.stderr)
        return None
    try:
        return write_report(folder, shown_as=shown_as)
    except Exception as e:  # noqa: BLE001 - the results are written; the page is a view of them
        where = shown_as or folder
        print(f"spectro: warning: {REPORT_NAME} not written ({type(e).__name__}: {' '.join(str(e).split())[:200]}); "
              f"rebuild it with: spectro report {where}", file=sys.stderr)
        return None


def write_compare(a: str | Path, b: str | Path, out: str | Path) -> Path:
    """Write the page comparing results folders ``a`` and ``b`` to ``out``."""
    from .compare import collect_compare

    return write_page(Path(out), collect_compare(a, b))
