"""Notebooks execute top to bottom (they are documentation that must not rot)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# the transformer notebook trains and samples a model (40 s on a fast 2-core host, 110 s on a slow
# one): it runs in the slow tier (CI runs it with SPECTRO_CI_SLOW=1), to keep the default test run under 10 minutes
SLOW = {"02_transformer_susceptibilities.ipynb"}
CASES = [pytest.param(p, id=p.name, marks=pytest.mark.slow) if p.name in SLOW else pytest.param(p, id=p.name)
         for p in NOTEBOOKS]


@pytest.mark.parametrize("path", CASES)
def test_notebook_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
