"""The quickstart notebook runs top to bottom, offline, in a kernel of this Python."""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "quickstart.ipynb"


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "clear the outputs before committing"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert 'os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")' in first_code.source


def test_python3_kernel_is_this_python():
    spec = KernelSpecManager().get_kernel_spec("python3")
    program = spec.argv[0]
    # jupyter_client runs a spec whose program is plain "python" with the running interpreter.
    same = program in ("python", "python3") or Path(program).resolve() == Path(sys.executable).resolve()
    assert same, f"the python3 kernel runs {program}, not {sys.executable}: the notebook would miss this install"


def test_quickstart_runs_without_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("WHYLOGS_NO_ANALYTICS", "True")
    for name in list(os.environ):
        if name.startswith(("SONGBIRD_", "WHYLABS_")):
            monkeypatch.delenv(name)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, allow_errors=False, resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute()
    except Exception as exc:  # CellExecutionError carries the failing cell and its traceback
        pytest.fail(f"the quickstart notebook failed: {exc}")
    html_outputs = [
        output["data"]["text/html"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "data" in output and "text/html" in output["data"]
    ]
    joined = "\n".join(html_outputs)
    assert "<b>songbird</b>: 2 of 2 profiles published" in joined, "publish_references' result shows as HTML"
    assert "training vs today" in joined and "<iframe" in joined
    assert "/resources/model-1/profiles?" in joined
