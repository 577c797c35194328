"""Front-end parity: for the same data, models, ladder and protocol, the dashboard and the CLI agree."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from conftest import PIN1, TINY
from revdistill.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")
KEYS = ["assay", "scheme", "fit_on", "representation", "model", "dim"]


def test_dashboard_and_cli_give_the_same_spearman_for_every_representation(proteingym_dir, tiny_cache, tmp_path,
                                                                           monkeypatch):
    from revdistill.dashboard import build_app
    from revdistill.dashboard.state import DashboardOptions

    csv = proteingym_dir / "assays" / f"{PIN1}.csv"
    monkeypatch.setenv("REVDISTILL_CACHE", str(tiny_cache))
    out = tmp_path / "cli.csv"
    assert main(["proteingym", str(csv), "--models", ",".join(TINY), "--fit-on", "both", "--out", str(out),
                 "--data-dir", str(proteingym_dir), "--store", str(tmp_path / "cli.h5")]) == 0
    cli = pd.read_csv(out, keep_default_na=False)

    app = build_app(DashboardOptions(cache_dir=tiny_cache, proteingym_dir=proteingym_dir, background=False,
                                     cpu_threads=None), warm_up=False)
    app.models.source.value = "upload"
    app.models.upload.value = ({"name": csv.name, "content": csv.read_bytes(), "type": "text/csv",
                                "size": csv.stat().st_size,
                                "last_modified": datetime.now(timezone.utc)},)
    app.models.fit_on.value = "both"
    app.models.on_compute()
    assert app.state.errors == []
    dashboard = app.state.analysis.table

    merged = cli.merge(dashboard, on=KEYS, suffixes=("_cli", "_app"), validate="one_to_one")
    assert len(merged) == len(cli) == len(dashboard) > 100
    assert (merged["spearman_cli"] - merged["spearman_app"]).abs().max() <= 1e-9
    for column in ("ladder_id", "naive_id", "protocol_id", "n_variants", "fold_source"):
        assert (merged[f"{column}_cli"] == merged[f"{column}_app"]).all(), column
    # and the figure caption names the protocol and ladders the CLI printed
    caption = app.scaling.caption.value
    assert all(protocol in caption for protocol in set(cli["protocol_id"]))
    assert all(ladder in caption for ladder in set(cli["ladder_id"]) - {""})
