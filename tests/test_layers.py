"""Imports only run downward: engine ← systems (ising, nn) ← analysis ← the job layer (jobs, and its
results-folder I/O ``outputs`` and ``report``) (docs/design.md §1)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "spectro"
JOB_LAYER = {"jobs", "outputs", "report"}
FORBIDDEN = {  # package -> packages (and top-level modules) it must not import
    "engine": {"ising", "nn", "models", "data", "analysis"} | JOB_LAYER,
    "ising": {"nn", "models", "data", "analysis"} | JOB_LAYER,
    "nn": {"ising", "analysis"} | JOB_LAYER,
    "models": {"analysis"} | JOB_LAYER,
    "data": {"analysis"} | JOB_LAYER,
    "analysis": {"nn"} | JOB_LAYER,
}


def _imports(path: Path, package: str) -> set[str]:
    """Top-level spectro packages a module imports (absolute or relative)."""
    found = set()
    depth = len(path.relative_to(ROOT).parts) - 1  # 1 for spectro/<package>/module.py
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("spectro."):
                found.add(node.module.split(".")[1])
            elif node.level > depth and node.module:  # from ..X import  → a sibling package of spectro
                found.add(node.module.split(".")[0])
            elif node.level > depth:  # from .. import X
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("spectro."))
    return found - {package}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_upward_imports(package):
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p, package) & FORBIDDEN[package])
           for p in (ROOT / package).rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def test_the_check_sees_relative_and_absolute_imports(tmp_path):
    assert {"engine", "nn"} <= _imports(ROOT / "jobs" / "nn_job.py", "jobs")  # from ..engine / ..nn.x import
    mod = ROOT / "analysis" / "_probe_for_test.py"
    try:
        mod.write_text("import spectro.jobs.cli\nfrom spectro.nn import system\n")
        assert {"jobs", "nn"} <= _imports(mod, "analysis")
        mod.write_text("def f():\n    from ..outputs import OutputError\nfrom .. import report\nfrom .. import io\n")
        assert {"outputs", "report", "io"} == _imports(mod, "analysis")  # in a function body too
    finally:
        mod.unlink()
