"""``spectro report``: (re)build the HTML report of a results folder, or compare two runs.

    spectro report DIR [--out FILE]              DIR/report.html (any results folder, earlier formats too)
    spectro report A B [--out FILE]              A and B side by side and A − B with combined error bars
    spectro report A --compare B [--out FILE]    the same

The page is self-contained (:mod:`spectro.report`). An existing file at the target that spectro
did not write is never replaced (one-line error, exit 2). Writing ``DIR/report.html`` into a
spectro results folder locks the folder and records the file in its marker, so ``--overwrite``
of a later run replaces it (:mod:`spectro.outputs`).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

__all__ = ["add_report_command", "cmd_report"]


def add_report_command(subparsers) -> None:
    """Register ``report`` on the top-level ``spectro`` subparsers."""
    p = subparsers.add_parser("report", help="write the self-contained HTML report of a results folder, or compare two",
                              description="Write DIR/report.html (one file, works offline), or with two folders a page "
                                          "showing both runs and their difference with combined error bars.")
    p.add_argument("folders", type=Path, nargs="+", metavar="DIR", help="results folder (two: compare them)")
    p.add_argument("--compare", type=Path, default=None, metavar="DIR2", help="compare DIR with this results folder")
    p.add_argument("--out", type=Path, default=None,
                   help="the page to write (default DIR/report.html; comparing: compare-A-vs-B.html in the current folder)")


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import REPORT_NAME, write_compare, write_report
    from .cli import UserError

    folders = list(args.folders) + ([args.compare] if args.compare is not None else [])
    if len(folders) > 2:
        raise UserError(f"report: give one results folder, or two to compare (got {len(folders)})")
    if len(folders) == 2:
        a, b = folders
        out = args.out or Path(f"compare-{_slug(a)}-vs-{_slug(b)}.html")
        path = write_compare(a, b, out)
    elif args.out is not None:
        path = write_report(folders[0], args.out)
    else:
        path = _into_results_folder(folders[0], REPORT_NAME, write_report)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _into_results_folder(folder: Path, name: str, write) -> Path:
    """Write ``folder/name``; in a spectro results folder, under its lock and recorded in its marker."""
    from .. import outputs

    marker = outputs.read_marker(folder) if folder.is_dir() else None
    if marker is None or name not in outputs.KINDS.get(marker.get("kind"), ()):
        return write(folder)
    with outputs.locked(folder):
        path = write(folder)
        marker = outputs.read_marker(folder)
        files = marker.get("files")
        if isinstance(files, dict):  # a results marker (spectro.run/2): record the page with its size and hash
            ours = outputs._command
            outputs.set_command(str(marker.get("command", "spectro")).split()[1:])  # the marker keeps the run's command
            try:
                outputs.write_marker(folder, marker["kind"], {**files, name: outputs.file_record(path)},
                                     results=marker.get("results"), previous=marker, dirs=marker.get("dirs") or ())
            finally:
                outputs._command = ours
    return path


def _slug(folder: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folder.resolve().name) or "run"
