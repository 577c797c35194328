"""A kernel served by Voila holds widgets and figures only: after a full compute, a UMAP, a landscape and "Load
results" of a results CSV, none of the compute libraries is in its ``sys.modules`` (the compute service did the
work, the results' bootstrap included), and it is the lean dashboard kernel (revdistill.dashboard.kernel) that
notebooks/voila.json asks for."""
from __future__ import annotations

import html
import json
import re
import shutil
import tempfile
import urllib.request
from pathlib import Path

import pytest

from revdistill.service.client import ServiceClient
from voila_server import start_voila, stop

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "esm", "numba", "llvmlite", "umap", "pynndescent", "sklearn", "h5py", "scipy")
NOTEBOOK = '''
import json, sys
sys.path.insert(0, {tests!r})
from datetime import datetime, timezone
from pathlib import Path
from revdistill.dashboard import build_app
from revdistill.dashboard.state import DashboardOptions
from synthetic_dms import write_dms_csv
app = build_app(DashboardOptions(cache_dir={cache!r}, background=False, service=True), warm_up=False)
csv = write_dms_csv(Path({folder!r}) / "PIN1_synthetic.csv", n_variants=200)
app.models.source.value = "upload"
app.models.upload.value = ({{"name": csv.name, "type": "text/csv", "size": csv.stat().st_size,
                            "content": memoryview(csv.read_bytes()), "last_modified": datetime.now(timezone.utc)}},)
app.models.on_compute()
app.umap.subspace.value = "block:tiny-64"
app.umap.on_run_umap()
results = app.state.analysis.table.to_csv(index=False).encode()  # "Load results" of an uploaded results CSV
app.scaling.results_upload.value = ({{"name": "run.csv", "type": "text/csv", "size": len(results),
                                     "content": memoryview(results), "last_modified": datetime.now(timezone.utc)}},)
app.scaling.on_load_results()
report = {{"loaded": app.scaling.status.value,
           "errors": [record.message for record in app.state.errors], "status": app.models.status.value,
           "umap": app.umap.status.value, "landscape": app.landscape.message.value,
           "heavy": [name for name in {heavy!r} if name in sys.modules],
           "grammars": [name for name in ("lark", "rfc3987_syntax") if sys.modules.get(name) is not None],
           "kernel": sys.argv[0]}}
print("REPORT" + json.dumps(report) + "END")
'''


def test_a_served_kernel_holds_no_compute_library_after_compute_umap_and_landscape(tiny_cache, tmp_path):
    import nbformat

    service_dir = Path(tempfile.mkdtemp(prefix="rdk-"))
    folder = tmp_path / "served"
    folder.mkdir()
    cache = tmp_path / "cache"
    shutil.copytree(tiny_cache, cache)
    source = NOTEBOOK.format(tests=str(REPO / "tests"), cache=str(cache), folder=str(folder), heavy=HEAVY)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, folder / "served.ipynb")
    config = json.loads((REPO / "notebooks" / "voila.json").read_text())
    config["VoilaConfiguration"].update(preheat_kernel=False, strip_sources=True)
    (folder / "voila.json").write_text(json.dumps(config))
    env = {**__import__("os").environ, "REVDISTILL_SERVICE_DIR": str(service_dir), "REVDISTILL_CACHE": str(cache)}
    process, url = start_voila("served.ipynb", folder, env, tmp_path / "voila.log",
                               extra_args=["--VoilaExecutor.timeout=600"])
    try:
        with urllib.request.urlopen(url, timeout=600) as response:
            page = html.unescape(response.read().decode("utf-8", errors="replace"))
    finally:
        stop(process)
        ServiceClient(service_dir).shutdown()
        shutil.rmtree(service_dir, ignore_errors=True)
    found = re.search(r"REPORT(\{.*?\})END", page, flags=re.S)
    assert found, (tmp_path / "voila.log").read_text()[-3000:]
    report = json.loads(found.group(1))
    assert report["errors"] == [] and report["status"].endswith("Ready."), report
    assert "UMAP of 200 points" in report["umap"] and "cells over" in report["landscape"], report
    assert "Loaded run.csv" in report["loaded"] and "recomputed" in report["loaded"], report
    assert report["heavy"] == [], f"compute libraries in a served kernel: {report['heavy']}"
    # voila.json's kernel spec manager started it through revdistill.dashboard.kernel (no IRI grammars compiled)
    assert report["kernel"].endswith("revdistill/dashboard/kernel.py") and report["grammars"] == [], report
