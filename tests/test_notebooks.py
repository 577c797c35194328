"""Every notebook runs top to bottom headless, and is committed clean (no outputs, no widget state)."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_expected_notebooks_exist():
    names = {path.name for path in ALL}
    assert {"dashboard.ipynb", "01_reverse_distillation.ipynb", "02_proteingym_scaling.ipynb"} <= names


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_is_commit_clean(path):
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name} cell {index} has outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {index} has an execution count"
    assert "widgets" not in notebook.get("metadata", {}), f"{path.name} stores widget state"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path, monkeypatch, proteingym_dir):
    import shutil
    import tempfile

    from nbclient import NotebookClient

    from revdistill.service.client import ServiceClient

    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("REVDISTILL_PROTEINGYM_DIR", str(proteingym_dir))  # fails loudly when missing
    service_dir = Path(tempfile.mkdtemp(prefix="rdn-"))  # the dashboard's kernel starts a compute service here
    monkeypatch.setenv("REVDISTILL_SERVICE_DIR", str(service_dir))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    finally:
        ServiceClient(service_dir).shutdown()
        shutil.rmtree(service_dir, ignore_errors=True)
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors, errors
    assert "widgets" not in notebook.metadata


def test_voila_serving_config():
    """Production settings: preheated kernels, culling (voila#1458), hidden tracebacks, stripped sources,
    and the allow-listed plotly bundle that revdistill.dashboard.serving copies next to the notebook."""
    import re

    from revdistill.dashboard.serving import STATIC_FOLDER, bundle_name

    config = json.loads((NOTEBOOKS / "voila.json").read_text())
    voila = config["VoilaConfiguration"]
    assert voila["preheat_kernel"] is True and voila["default_pool_size"] >= 1
    assert voila["show_tracebacks"] is False and voila["strip_sources"] is True
    assert not voila.get("progressive_rendering", False)  # incompatible with preheating
    culling = config["MappingKernelManager"]
    assert culling["cull_idle_timeout"] > 0 and culling["cull_interval"] > 0
    served = f"{STATIC_FOLDER}/{bundle_name()}"
    assert any(re.fullmatch(pattern, served) for pattern in voila["file_allowlist"])
