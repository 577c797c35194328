"""Panel 1, models & data: ESM-2 sizes, the data set, the device, and the Compute button."""
from __future__ import annotations

import html
import logging
from typing import Any

import ipywidgets as widgets

from .analysis import (FIT_ON_CHOICES, LADDER_CORPORA, TINY_FAMILY, WEIGHTS_HELP, Choices, ModelChoice,
                       available_device, compute_analysis, default_models, model_choices)
from .data import demo_task, proteingym_task, uploaded_task
from .state import DashboardState
from .widgets import section_title

logger = logging.getLogger(__name__)

__all__ = ["ModelsPanel", "build_models_panel", "DATA_SOURCES"]

DATA_SOURCES = {"demo": "Bundled demo set", "proteingym": "ProteinGym assay", "upload": "Upload FASTA / DMS CSV"}


def _local_assays(proteingym_dir: Any) -> list[str]:
    """Assay ids whose CSV is present in the local ProteinGym folder (for the combobox)."""
    try:
        from revdistill.proteingym import resolve_data_dir  # noqa: PLC0415

        folder = resolve_data_dir(proteingym_dir)
    except Exception:  # noqa: BLE001 - no local data is a normal situation
        return []
    return sorted(path.stem for path in folder.rglob("*.csv") if "_" in path.stem and path.parent.name == "assays")


class ModelsPanel:
    """Models & data panel.

    Parameters
    ----------
    state : DashboardState

    Attributes
    ----------
    widget : ipywidgets.VBox
    checkboxes : dict of str to ipywidgets.Checkbox
        One per model alias, in ladder order; disabled with the reason when unavailable.
    source, assay_id, upload, device, fit_on, corpus, compute, progress, status : widgets
    """

    def __init__(self, state: DashboardState) -> None:
        from revdistill.esm.models import get_spec  # noqa: PLC0415

        self.state = state
        options = state.options
        device = available_device()
        self.choices: list[ModelChoice] = model_choices(device, options.weights_dir)
        defaults = default_models(self.choices)
        self.real_weights = defaults != TINY_FAMILY
        self.banner = widgets.HTML(self._banner_html())
        self.checkboxes: dict[str, widgets.Checkbox] = {}
        columns: dict[bool, list[widgets.Widget]] = {
            True: [widgets.HTML("<b>ESM-2 (pretrained)</b>")],
            False: [widgets.HTML("<b>Tiny untrained family (offline demo)</b>")],
        }
        for choice in self.choices:
            box = widgets.Checkbox(value=choice.alias in defaults and choice.available,
                                   description=choice.label, disabled=not choice.available,
                                   indent=False, layout={"width": "250px"})
            box.add_class(f"rd-model-{choice.alias}")
            self.checkboxes[choice.alias] = box
            reason = widgets.HTML(f"<span class='rd-reason'>{html.escape(choice.reason)}</span>")
            columns[get_spec(choice.alias).trained].append(widgets.HBox([box, reason]))
        models_box = widgets.HBox([widgets.VBox(columns[True], layout={"width": "480px"}),
                                   widgets.VBox(columns[False])])

        self.source = widgets.RadioButtons(options=[(label, key) for key, label in DATA_SOURCES.items()],
                                           value="demo", description="Data", layout={"width": "auto"})
        self.assay_id = widgets.Combobox(placeholder="DMS_id, e.g. PIN1_HUMAN_Tsuboyama_2023_1I6C",
                                         options=_local_assays(options.proteingym_dir),
                                         description="Assay", ensure_option=False,
                                         layout={"width": "460px"})
        limit = options.max_upload_bytes / 1e6
        self.upload = widgets.FileUpload(accept=".fasta,.fa,.faa,.csv", multiple=False,
                                         description=f"Upload (≤ {limit:.0f} MB)",
                                         layout={"width": "230px"})
        self.upload.add_class("rd-upload")
        devices = ["cpu"] + (["cuda"] if device == "cuda" else [])
        self.device = widgets.Dropdown(options=devices, value=device, description="Device",
                                       layout={"width": "200px"})
        self.fit_on = widgets.Dropdown(options=[(label, key) for key, label in FIT_ON_CHOICES.items()],
                                       value="nested", description="Fit", layout={"width": "420px"})
        self.fit_on.add_class("rd-fit-on")
        self.corpus = widgets.Dropdown(options=[(label, key) for key, label in LADDER_CORPORA.items()],
                                       value="proteingym", description="Ladder on", layout={"width": "420px"})
        self.corpus.add_class("rd-corpus")
        self.compute = widgets.Button(description="Compute", button_style="primary", icon="play")
        self.compute.add_class("rd-compute")
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout={"width": "300px"})
        self.status = widgets.Label(value="Choose models and data, then press Compute.")
        self.status.add_class("rd-status")

        self.source.observe(state.guard(self._on_source, "data source"), names="value")
        self.compute.on_click(state.guard(self.on_compute, "Compute"))
        self._on_source({"new": self.source.value})
        data_box = widgets.VBox([self.source, widgets.HBox([self.assay_id]), self.upload])
        protocol = widgets.HTML(f"<div class='rd-hint rd-protocol'>Protocol: {html.escape(state.protocol.describe())}"
                                "</div>")
        self.widget = widgets.VBox([
            section_title("1 · Models & data",
                          "ESM-2 sizes form the ladder (small → large); greyed sizes say why."),
            self.banner, models_box, data_box, widgets.HBox([self.device]),
            widgets.HBox([self.fit_on, self.corpus]), protocol,
            widgets.HBox([self.compute, self.progress, self.status]),
        ])
        self.widget.add_class("rd-panel")

    def _banner_html(self) -> str:
        if self.real_weights:
            return ""
        return ("<div class='rd-banner'><b>Demo mode: untrained tiny models.</b> No ESM-2 weights were "
                "found, so the dashboard uses a tiny, randomly initialised ESM-2 family (tiny-32 → "
                "tiny-48 → tiny-64). Every number it shows is real computation on that family, but it "
                f"says nothing about proteins. {html.escape(WEIGHTS_HELP)}</div>")

    def _on_source(self, change: dict[str, Any]) -> None:
        source = change["new"]
        self.assay_id.layout.display = "flex" if source == "proteingym" else "none"
        self.upload.layout.display = "flex" if source == "upload" else "none"

    # -- actions ---------------------------------------------------------------------------------
    def selected_models(self) -> tuple[str, ...]:
        """Checked aliases, in ladder order."""
        return tuple(alias for alias, box in self.checkboxes.items() if box.value and not box.disabled)

    def load_task(self):
        """The task chosen in the panel, read with the session's protocol (may raise ``ValueError``)."""
        source = self.source.value
        protocol = self.state.protocol
        if source == "demo":
            return demo_task(protocol)
        elif source == "proteingym":
            return proteingym_task(self.assay_id.value, protocol, self.state.options.proteingym_dir)
        elif source == "upload":
            files = list(self.upload.value)
            if not files:
                raise ValueError("choose a FASTA or DMS CSV file to upload first")
            item = files[0]
            return uploaded_task(item["name"], bytes(item["content"]), self.state.options.max_upload_bytes, protocol,
                                 self.state.options.proteingym_dir)
        else:
            raise ValueError(f"unknown data source {source!r}; choose from {list(DATA_SOURCES)}")

    def selection(self) -> Choices:
        """The models, ladder and device chosen (checked)."""
        return Choices(models=self.selected_models(), fit_on=self.fit_on.value, corpus=self.corpus.value,
                       device=self.device.value)

    def on_compute(self, _button: Any = None) -> None:
        """Fit or fetch the ladder, run the experiment and precompute the views in the background; then
        publish the analysis."""
        choices = self.selection()
        task = self.load_task()
        options = self.state.options
        embedder = self.state.embedder(choices.device)
        self.compute.disabled = True
        self.progress.value = 0.0
        self.progress.bar_style = "info"
        self.status.value = f"{task.name}: {len(task)} sequences, models {', '.join(choices.models)} …"

        def work() -> Any:
            return compute_analysis(task, choices, self.state.protocol, embedder=embedder, cache=options.cache_dir,
                                    cpu_threads=options.cpu_threads, progress=self._post_progress)

        def done(analysis: Any) -> None:
            self.progress.value = 1.0
            self.progress.bar_style = "success"
            spent = sum(analysis.seconds.values())
            self.state.set_analysis(analysis)
            self.status.value = (f"{task.name}: {len(task)} sequences × {len(analysis.models)} models "
                                 f"({spent:.1f} s). Ready.")

        def finally_() -> None:
            self.compute.disabled = False
            if self.progress.bar_style != "success":
                self.progress.bar_style = "danger"
                self.status.value = "Compute failed (see the message above)."

        self.state.run_task("Compute", work, done, finally_=finally_)

    def _post_progress(self, fraction: float, message: str) -> None:
        self.state.call_soon(self._set_progress, fraction, message)

    def _set_progress(self, fraction: float, message: str) -> None:
        self.progress.value = max(0.0, min(1.0, fraction))
        self.status.value = message


def build_models_panel(state: DashboardState) -> ModelsPanel:
    """Build the models & data panel (see :class:`ModelsPanel`)."""
    return ModelsPanel(state)
