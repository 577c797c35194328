"""Every notebook runs top to bottom headless, and is committed clean (no outputs, no widget state)."""
from __future__ import annotations

import json
import re
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


def test_notebooks_name_no_folder_outside_the_clone():
    for path in ALL:
        text = path.read_text(encoding="utf-8")
        assert "shared" not in text and "../" not in text, f"{path.name} reaches outside the repository"


#: What a notebook must not print: a hashed id (ladder, naive baseline, protocol) means nothing to a reader.
HASHED_ID = re.compile(r"\b(?:rdl|nvb)-[0-9a-f]{12}\b|\bp-[0-9a-f]{10}\b|\bfile-[0-9a-f]{12}\b")


def _printed(notebook) -> str:
    """The text a reader sees: streams, and the plain/HTML results other than figures and widgets."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output.get("text", ""))
            data = output.get("data", {})
            if not any(key.startswith(("application/vnd.plotly", "application/vnd.jupyter.widget")) for key in data):
                texts += [str(data.get("text/plain", "")), str(data.get("text/html", ""))]
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_executes_from_a_fresh_clone(path, tmp_path, monkeypatch):
    """As in a user's clone: an empty cache and an empty ProteinGym folder (no ../shared), so the assay of
    notebook 02 comes from the package; and nothing printed names a folder of this machine or a hashed id."""
    import shutil
    import tempfile

    from nbclient import NotebookClient

    from revdistill.service.client import ServiceClient

    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "proteingym").mkdir()
    monkeypatch.setenv("REVDISTILL_PROTEINGYM_DIR", str(tmp_path / "proteingym"))
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
    printed = _printed(notebook)
    for folder in (tmp_path, REPO, Path.home()):
        assert str(folder) not in printed, f"{path.name} prints a path of this machine ({folder})"
    assert not HASHED_ID.search(printed), f"{path.name} prints a hashed id: {HASHED_ID.search(printed).group(0)}"


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


def test_served_template_requests_nothing_from_a_cdn_and_make_dashboard_uses_it(monkeypatch):
    """The page template links no stylesheet or script outside the server (tests/test_offline_page.py checks a
    served page in a browser), Voila finds it on the path serving.py and the Makefile give, and both use it."""
    from voila.paths import collect_template_paths

    from revdistill.dashboard.serving import TEMPLATE, template_root, voila_environment

    folder = template_root() / "voila" / "templates" / TEMPLATE
    assert json.loads((folder / "conf.json").read_text())["base_template"] == "lab"
    assert not re.search(r"(?:href|src)=[\"']?(?:https?:)?//", (folder / "index.html.j2").read_text())
    monkeypatch.setenv("JUPYTER_PATH", voila_environment({"JUPYTER_PATH": "/elsewhere"})["JUPYTER_PATH"])
    assert str(folder) in collect_template_paths(["voila", "nbconvert"], TEMPLATE, prune=True)
    makefile = (REPO / "Makefile").read_text()
    assert f"--template={TEMPLATE}" in makefile
    assert f"VOILA_TEMPLATES := $(CURDIR)/{template_root().relative_to(REPO)}" in makefile
