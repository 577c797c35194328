"""Panel 1, models & data: ESM-2 sizes (with their downloads), the data set, the device, and Compute.

Everything a newcomer needs is here, without a terminal: each ESM-2 size can be downloaded in place
(:mod:`.weights_panel`), any of ProteinGym's 217 assays picked from a browser and fetched on Compute
(:mod:`.assay_browser`), and before computing the panel says how much there is to embed and about how
long it takes on this machine (:mod:`.timing`, from a short cached calibration run), with a seeded
subsample of variants offered for a quick look (labelled as such on every figure). While Compute runs,
progress shows the time elapsed and an estimate of the time left.
"""
from __future__ import annotations

import html
import logging
import threading
from typing import Any

import ipywidgets as widgets

from revdistill.esm.batching import embedded_residues

from .analysis import FIT_ON_CHOICES, LADDER_CORPORA, Choices, ModelChoice, default_models
from .assay_browser import AssayBrowser
from .data import demo_task, proteingym_task, uploaded_task
from .state import DashboardState
from .timing import Estimate, ProgressClock
from .weights_panel import WeightsControls
from .widgets import Throttle, section_title

logger = logging.getLogger(__name__)

__all__ = ["ModelsPanel", "build_models_panel", "DATA_SOURCES", "DEFAULT_SUBSAMPLE"]

DATA_SOURCES = {"demo": "Bundled demo set", "proteingym": "ProteinGym assay", "upload": "Upload FASTA / DMS CSV"}
#: Variants in a quick-look subsample.
DEFAULT_SUBSAMPLE = 1000
SUBSAMPLE_SEED = 0


class ModelsPanel:
    """Models & data panel.

    Parameters
    ----------
    state : DashboardState
    check_network : bool
        Check in the background whether the weights server answers.

    Attributes
    ----------
    widget : ipywidgets.VBox
    checkboxes : dict of str to ipywidgets.Checkbox
        One per model alias, in ladder order; disabled with the reason when unavailable.
    weights : WeightsControls
        Download size, button and progress per ESM-2 size.
    browser : AssayBrowser
        The ProteinGym assays (shown for the "ProteinGym assay" data choice).
    source, upload, subsample, subsample_size, device, fit_on, corpus, estimate, compute, progress, status
        The other controls.
    """

    def __init__(self, state: DashboardState, check_network: bool = True) -> None:
        self.state = state
        options = state.options
        environment = state.compute.environment()
        device = environment.device
        self.choices: list[ModelChoice] = list(environment.choices)
        defaults = default_models(self.choices)
        self.banner = widgets.HTML("")
        self.checkboxes: dict[str, widgets.Checkbox] = {}
        self.reasons: dict[str, widgets.HTML] = {}
        self.weights = WeightsControls(state, self.refresh_models, check_network=check_network)
        self._calibrating: set[tuple] = set()
        self._tasks: dict[str, Any] = {}
        models_box = self._models_box(defaults)
        self.source = widgets.RadioButtons(options=[(label, key) for key, label in DATA_SOURCES.items()],
                                           value="demo", description="Data", layout={"width": "auto"})
        self.browser = AssayBrowser(state, on_pick=lambda _dms_id: self._on_data_change())
        self._running = False
        limit = options.max_upload_bytes / 1e6
        self.upload = widgets.FileUpload(accept=".fasta,.fa,.faa,.csv", multiple=False,
                                         description=f"Upload (≤ {limit:.0f} MB)", layout={"width": "230px"})
        self.upload.add_class("rd-upload")
        self.subsample = widgets.Checkbox(value=False, indent=False, description="Quick look: a seeded subsample of",
                                          layout={"width": "260px"})
        self.subsample.add_class("rd-subsample")
        self.subsample_size = widgets.BoundedIntText(value=DEFAULT_SUBSAMPLE, min=50, max=10_000_000, step=100,
                                                     layout={"width": "110px"})
        devices = ["cpu"] + (["cuda"] if device == "cuda" else [])
        self.device = widgets.Dropdown(options=devices, value=device, description="Device", layout={"width": "200px"})
        self.fit_on = widgets.Dropdown(options=[(label, key) for key, label in FIT_ON_CHOICES.items()],
                                       value="nested", description="Fit", layout={"width": "420px"})
        self.fit_on.add_class("rd-fit-on")
        self.corpus = widgets.Dropdown(options=[(label, key) for key, label in LADDER_CORPORA.items()],
                                       value="proteingym", description="Ladder on", layout={"width": "420px"})
        self.corpus.add_class("rd-corpus")
        self.estimate = widgets.HTML("")
        self.estimate.add_class("rd-estimate")
        self.compute = widgets.Button(description="Compute", button_style="primary", icon="play")
        self.compute.add_class("rd-compute")
        self.cancel = widgets.Button(description="Cancel", icon="stop", layout={"display": "none"})
        self.cancel.add_class("rd-cancel")
        self._cancel = threading.Event()
        self.progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout={"width": "300px"})
        self.status = widgets.Label(value="Choose models and data, then press Compute.")
        self.status.add_class("rd-status")
        self._observe()
        self._on_source({"new": self.source.value})
        protocol = widgets.HTML(f"<div class='rd-hint rd-protocol'>Protocol: {html.escape(state.protocol.describe())}"
                                "</div>")
        data_box = widgets.VBox([self.source, self.browser.widget, self.upload,
                                 widgets.HBox([self.subsample, self.subsample_size,
                                               widgets.HTML("<span class='rd-reason'>variants (seed 0; every figure "
                                                            "says so)</span>")])])
        self.widget = widgets.VBox([
            section_title("1 · Models & data",
                          "ESM-2 sizes form the ladder (small → large); a missing size can be downloaded here."),
            self.banner, models_box, data_box, widgets.HBox([self.device]),
            widgets.HBox([self.fit_on, self.corpus]), protocol, self.estimate,
            widgets.HBox([self.compute, self.cancel, self.progress, self.status]),
        ])
        self.widget.add_class("rd-panel")
        self._show_banner()
        state.guard(self.update_estimate, "estimate")()

    # -- models ----------------------------------------------------------------------------------------
    def _models_box(self, defaults: tuple[str, ...]) -> widgets.VBox:
        from revdistill.esm.models.registry import get_spec  # noqa: PLC0415

        real = [widgets.HTML("<b>ESM-2 (pretrained)</b>")]
        tiny = [widgets.HTML("<b>Tiny untrained family (offline demo)</b>")]
        for choice in self.choices:
            box = widgets.Checkbox(value=choice.alias in defaults and choice.available, description=choice.label,
                                   disabled=not choice.available, indent=False, layout={"width": "250px"})
            box.add_class(f"rd-model-{choice.alias}")
            self.checkboxes[choice.alias] = box
            reason = widgets.HTML(f"<span class='rd-reason'>{html.escape(choice.reason)}</span>",
                                  layout={"width": "150px"})
            self.reasons[choice.alias] = reason
            if get_spec(choice.alias).trained:
                real.append(widgets.HBox([box, reason, self.weights.row(choice.alias)]))
            else:
                tiny.append(widgets.HBox([box, reason]))
        return widgets.VBox([widgets.VBox(real), widgets.VBox(tiny)])

    def refresh_models(self) -> None:
        """Read which models can be chosen again (after a download) and enable their checkboxes."""
        self.choices = list(self.state.compute.environment(refresh=True).choices)
        for choice in self.choices:
            box = self.checkboxes[choice.alias]
            box.disabled = not choice.available
            if not choice.available:
                box.value = False
            self.reasons[choice.alias].value = f"<span class='rd-reason'>{html.escape(choice.reason)}</span>"
        self._show_banner()
        self.update_estimate()

    def _show_banner(self) -> None:
        from revdistill.esm.models.registry import get_spec  # noqa: PLC0415

        available = [c.alias for c in self.choices if c.available and get_spec(c.alias).trained]
        if available:
            self.banner.value = ""
            return
        self.banner.value = (
            "<div class='rd-banner'><b>Demo mode: untrained tiny models.</b> No ESM-2 weights are on this machine "
            "yet, so the dashboard uses a tiny, randomly initialised ESM-2 family (tiny-32 → tiny-48 → tiny-64): "
            "every number it shows is real computation on that family, but it says nothing about proteins. Press "
            "<b>Download</b> beside the ESM-2 sizes below (8M, 35M and 150M make a first ladder); each size can be "
            "ticked as soon as its download ends.</div>")

    def selected_models(self) -> tuple[str, ...]:
        """Checked aliases, in ladder order."""
        return tuple(alias for alias, box in self.checkboxes.items() if box.value and not box.disabled)

    def selection(self) -> Choices:
        """The models, ladder and device chosen (checked)."""
        return Choices(models=self.selected_models(), fit_on=self.fit_on.value, corpus=self.corpus.value,
                       device=self.device.value)

    # -- data ------------------------------------------------------------------------------------------
    def _observe(self) -> None:
        guard = self.state.guard
        self.source.observe(guard(self._on_source, "data source"), names="value")
        for control in (*self.checkboxes.values(), self.device, self.fit_on, self.corpus, self.subsample,
                        self.subsample_size):
            control.observe(guard(lambda _change: self.update_estimate(), "estimate"), names="value")
        self.upload.observe(guard(self._on_upload, "upload"), names="value")
        self.compute.on_click(guard(self.on_compute, "Compute"))
        self.cancel.on_click(guard(self.on_cancel, "Cancel"))

    def _on_source(self, change: dict[str, Any]) -> None:
        source = change["new"]
        self.browser.widget.layout.display = "flex" if source == "proteingym" else "none"
        self.upload.layout.display = "flex" if source == "upload" else "none"
        self._on_data_change()

    def _on_upload(self, _change: Any) -> None:
        self._tasks.pop("upload", None)
        self._on_data_change()

    def _on_data_change(self) -> None:
        self.update_compute()
        self.update_estimate()

    def missing_choice(self) -> str | None:
        """Why Compute cannot run yet (what to choose), or None when what it would run is unambiguous."""
        if self.source.value == "proteingym" and self.browser.selected is None:
            return "pick a ProteinGym assay in the list (search by protein, organism or id, then click its row)"
        if self.source.value == "upload" and not self.upload.value:
            return "choose a FASTA or DMS CSV file to upload first"
        return None

    def update_compute(self) -> None:
        """Enable Compute only when no computation runs and the data it would use is chosen (tooltip: why not)."""
        reason = self.missing_choice()
        self.compute.disabled = self._running or reason is not None
        self.compute.tooltip = "a computation is running" if self._running else (reason or "")

    def assay_id(self) -> str:
        """The ProteinGym assay chosen in the browser (a row, never the search text)."""
        chosen = self.browser.selected
        if not chosen:
            raise ValueError(self.missing_choice() or "pick a ProteinGym assay in the list")
        return chosen

    def load_task(self):
        """The task chosen in the panel, read with the session's protocol (may raise ``ValueError``)."""
        source, protocol, options = self.source.value, self.state.protocol, self.state.options
        if source == "demo":
            key = "demo"
        elif source == "proteingym":
            key = f"proteingym:{self.assay_id()}"
        elif source == "upload":
            key = "upload"
            if not self.upload.value:
                raise ValueError("choose a FASTA or DMS CSV file to upload first")
        else:
            raise ValueError(f"unknown data source {source!r}; choose from {list(DATA_SOURCES)}")
        if key not in self._tasks:
            if source == "demo":
                self._tasks[key] = demo_task(protocol)
            elif source == "proteingym":
                self._tasks[key] = proteingym_task(self.assay_id(), protocol, options.proteingym_dir)
            else:
                item = list(self.upload.value)[0]
                self._tasks[key] = uploaded_task(item["name"], bytes(item["content"]), options.max_upload_bytes,
                                                 protocol, options.proteingym_dir)
        return self._tasks[key]

    def _subsample_size(self, n_records: int) -> int | None:
        """Variants of the quick-look subsample, or None for the whole data set."""
        if not self.subsample.value or self.subsample_size.value >= n_records:
            return None
        return int(self.subsample_size.value)

    # -- estimate --------------------------------------------------------------------------------------
    def _workload(self, choices: Choices) -> tuple[int, int, float, int | None, int]:
        """``(records, residues to embed, mean residues per record, stored records or None, corpus residues)``
        of the chosen data; the store and the ladder cache are read by the compute service."""
        long_sequences = self.state.compute.environment().long_sequences  # the service's engine rule
        dms_id = self.browser.selected if self.source.value == "proteingym" else None
        if self.source.value == "proteingym" and (dms_id is None or not bool(self.browser.row(dms_id)["local"])):
            if dms_id is None:
                raise LookupError("pick an assay to see its size")
            row = self.browser.row(dms_id)
            records = int(row["singles"] if self.state.protocol.singles_only else row["total"])
            size = self._subsample_size(records) or records
            per_record = embedded_residues(int(row["length"]), long_sequences)
            info = self.state.compute.estimate(choices, length=per_record)
            self._speed = info.speed
            return size, size * per_record, per_record, None, info.corpus_residues
        task = self.load_task()
        size = self._subsample_size(len(task)) or len(task)
        lengths = [embedded_residues(len(sequence), long_sequences) for _, sequence in task.records]
        length = sum(lengths) / max(len(lengths), 1)
        whole = size == len(task)
        info = self.state.compute.estimate(
            choices, length=length, store_key="proteingym" if task.from_benchmark else task.key,
            ids=[record_id for record_id, _ in task.records] if whole else None,
            records=task.records if choices.corpus == "data" else None)
        self._speed = info.speed
        stored = info.stored if info.stored is not None else [False] * len(lengths)
        todo = sum(n for n, known in zip(lengths[:size], stored[:size]) if not known)
        return size, todo, length, int(sum(stored)) if whole else 0, info.corpus_residues

    def update_estimate(self) -> None:
        """Show what Compute has to embed and about how long it takes; measure the speed if not known."""
        try:
            from revdistill.esm.models.registry import parse_models  # noqa: PLC0415

            models = parse_models(self.selected_models())
            if len(models) < 2:
                raise LookupError("tick at least two model sizes")
            choices = Choices(models=models, fit_on=self.fit_on.value, corpus=self.corpus.value,
                              device=self.device.value)
            records, residues, length, stored, corpus = self._workload(choices)
        except (LookupError, ValueError) as reason:
            self.estimate.value = f"<span class='rd-hint'>Estimate: {html.escape(str(reason))}.</span>"
            self._estimate = None
            return
        speed = self._speed
        self._estimate = Estimate(records=records, residues=residues, stored=stored, corpus_residues=corpus,
                                  speed=speed)
        self.estimate.value = f"<span class='rd-hint'>Estimate: {html.escape(self._estimate.describe())}</span>"
        if speed is None:
            self._calibrate(choices, length)

    def _calibrate(self, choices: Choices, length: float) -> None:
        """Measure the speed of ``models`` in the background (once per setting), then redo the estimate."""
        key = (choices.models, choices.device, round(length))
        if key in self._calibrating:
            return
        self._calibrating.add(key)
        compute = self.state.compute
        self.state.run_task("measure embedding speed", lambda: compute.calibrate(choices, length),
                            lambda _speed: self.update_estimate())

    # -- compute ---------------------------------------------------------------------------------------
    def on_compute(self, _button: Any = None) -> None:
        """Fetch the assay if needed, read the data (a seeded subsample when asked), fit or fetch the
        ladder, run the experiment and precompute the views, in the background; then publish the analysis."""
        choices = self.selection()
        dms_id = self.assay_id() if self.source.value == "proteingym" else None
        fetch = dms_id is not None and dms_id in set(self.browser.catalog["DMS_id"]) and not bool(
            self.browser.row(dms_id)["local"])
        task = None if fetch else self.load_task()
        want = self.subsample.value and int(self.subsample_size.value)
        options, compute = self.state.options, self.state.compute
        self._cancel = cancel = threading.Event()
        estimate = getattr(self, "_estimate", None)
        clock = ProgressClock(None if estimate is None else estimate.seconds)
        post = Throttle(self.state, self._set_progress, interval=0.25)
        self._running = True
        self.update_compute()
        self.cancel.layout.display = "flex"
        self.progress.value, self.progress.bar_style = 0.0, "info"
        self.status.value = f"{dms_id or task.name}: starting with models {', '.join(choices.models)} …"

        def on_bytes(done: int, total: int | None, label: str) -> None:
            shown = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB" if total else f"{done / 1e6:.1f} MB"
            post(0.02 * (done / total if total else 0.0), f"fetching {label}: {shown}")

        def work() -> Any:
            nonlocal task
            if fetch:
                self.browser.fetch(dms_id, progress=on_bytes)
            if task is None:
                task = proteingym_task(dms_id, self.state.protocol, options.proteingym_dir)
                self._tasks[f"proteingym:{dms_id}"] = task
            if want and want < len(task):
                from revdistill.experiment.tasks import subsample_task  # noqa: PLC0415

                task = subsample_task(task, want, SUBSAMPLE_SEED)
            return compute.analysis(task, choices, self.state.protocol, cancel=cancel,
                                    progress=lambda f, m: post(f, f"{m} · {clock.describe(f)}"))

        def done(analysis: Any) -> None:
            if fetch:  # before "Ready.": the catalogue shows the fetched assay on disk once the page says so
                self.browser.mark_local(dms_id)
            self.progress.value, self.progress.bar_style = 1.0, "success"
            spent = sum(analysis.seconds.values())
            self.state.set_analysis(analysis)
            self.status.value = (f"{analysis.task.name}: {len(analysis.task)} sequences × {len(analysis.models)} "
                                 f"models ({spent:.1f} s). Ready.")

        def finally_() -> None:
            self._running = False
            self.cancel.layout.display = "none"
            if self.progress.bar_style != "success":  # the status line must not outlive its job
                self.progress.bar_style = "danger"
                self.status.value = self.failed_status(dms_id or task.name, cancelled=cancel.is_set())
            self.update_compute()
            if fetch and self.progress.bar_style != "success":  # fetched, then failed or cancelled
                self.browser.mark_local(dms_id)
            self.update_estimate()

        self.state.run_task("Compute", work, done, finally_=finally_)

    def failed_status(self, name: str, cancelled: bool = False) -> str:
        """The status line after a Compute that did not finish: cancelled, or failed with the reason (the error
        box has the rest)."""
        if cancelled:
            return f"{name}: Compute cancelled (what was stored so far is kept)."
        record = next((r for r in reversed(self.state.errors) if r.where == "Compute"), None)
        reason = "stopped by an internal error" if record is None or not record.expected else record.message
        if len(reason) > 160:
            reason = reason[:159] + "…"
        return f"{name}: Compute failed: {reason}"

    def on_cancel(self, _button: Any = None) -> None:
        """Stop the running Compute at its next progress point (what is stored so far stays whole)."""
        self._cancel.set()
        self.status.value = "Cancelling …"

    def _set_progress(self, fraction: float, message: str) -> None:
        if self.progress.bar_style == "info":  # a late update must not undo "done" or "failed"
            self.progress.value = max(0.0, min(1.0, fraction))
            self.status.value = message


def build_models_panel(state: DashboardState) -> ModelsPanel:
    """Build the models & data panel (see :class:`ModelsPanel`)."""
    return ModelsPanel(state)
