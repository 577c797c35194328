"""ESM-2 weights from the app: each size's download size, a Download button and a progress bar.

Downloads go through :func:`revdistill.esm.models.weights.download_weights` (fair-esm's published files, or
``$REVDISTILL_WEIGHTS_URL``; resumable from ``<name>.pt.part``, checked, renamed into place) into the
folder :func:`revdistill.esm.models.loading.load_esm2` reads, on a thread of their own so Compute never waits for
them. Whether the server can be reached is checked once in the background when the panel is built
(:func:`revdistill.esm.models.weights.check_online`): offline, the buttons say why instead of failing later.
When a download ends, ``on_change`` lets the models panel enable that size's checkbox.
"""
from __future__ import annotations

import html
import logging
import threading
import time
from typing import Any, Callable

import ipywidgets as widgets

from .state import DashboardState
from .widgets import Throttle, run_in_thread

logger = logging.getLogger(__name__)

__all__ = ["WeightsControls", "format_bytes"]


def format_bytes(size: float | None) -> str:
    """``"30 MB"``, ``"2.6 GB"``."""
    if size is None:
        return "?"
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    return f"{size / 1e6:.0f} MB"


class WeightsControls:
    """Download controls for the trained ESM-2 sizes (8M … 15B).

    Parameters
    ----------
    state : DashboardState
    on_change : callable
        Called (on the kernel's loop) after a download finished, to refresh the model choices.
    check_network : bool
        Check in the background whether the weights server answers (off in unit tests).

    Attributes
    ----------
    buttons, bars, labels : dict of str to widget
        Per alias: the Download button, its progress bar (hidden until used), its size/state text.
    offline : str or None
        Why downloads cannot work (None while unknown or online).
    online_check : threading.Thread or None
        The background check of the server (join it to wait for ``offline``).
    """

    def __init__(self, state: DashboardState, on_change: Callable[[], None], check_network: bool = True) -> None:
        from revdistill.esm.models.weights import weights_status  # noqa: PLC0415

        self.state, self.on_change = state, on_change
        self.offline: str | None = None
        self.online_check: threading.Thread | None = None
        self.active: set[str] = set()
        self.buttons: dict[str, widgets.Button] = {}
        self.bars: dict[str, widgets.FloatProgress] = {}
        self.labels: dict[str, widgets.HTML] = {}
        for status in weights_status(state.options.weights_dir):
            alias = status.alias
            button = widgets.Button(description="", icon="download", layout={"width": "120px"})
            button.add_class(f"rd-download-{alias}")
            button.on_click(state.guard(lambda _b, alias=alias: self.download(alias), f"download {alias}"))
            bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout={"width": "120px", "display": "none"})
            bar.add_class(f"rd-download-bar-{alias}")
            label = widgets.HTML("")
            label.add_class(f"rd-weights-{alias}")
            self.buttons[alias], self.bars[alias], self.labels[alias] = button, bar, label
        self.refresh()
        if check_network:
            self._check_online()

    def row(self, alias: str) -> widgets.HBox:
        """The controls of one size, to sit beside its checkbox."""
        return widgets.HBox([self.labels[alias], self.buttons[alias], self.bars[alias]])

    # -- state ------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Show each size's state on disk (present, partial, missing) and its download size."""
        from revdistill.esm.models.weights import weights_status  # noqa: PLC0415

        for status in weights_status(self.state.options.weights_dir):
            alias, button = status.alias, self.buttons[status.alias]
            if alias in self.active:
                continue
            size = format_bytes(status.expected_bytes)
            if status.present:
                text, button.layout.display = f"{format_bytes(status.size_on_disk)} on disk", "none"
            else:
                button.layout.display = "flex"
                button.description = "Resume" if status.partial else "Download"
                done = f", {format_bytes(status.partial_bytes)} done" if status.partial else ""
                text = f"≈ {size}{done}"
                button.disabled = self.offline is not None
                button.tooltip = (f"offline: {self.offline}" if self.offline else
                                  f"download {status.name}.pt (≈ {size}) into {status.path.parent}")
            self.labels[alias].value = f"<span class='rd-reason'>{html.escape(text)}</span>"

    def _check_online(self) -> None:
        """Ask the weights server once, in the background; offline disables the buttons with the reason."""
        from revdistill.esm.models.weights import check_online  # noqa: PLC0415

        def work() -> None:
            reason = check_online(timeout=5.0)
            self.state.call_soon(self._set_offline, reason)

        self.state.event_loop()  # remember the kernel's loop for call_soon
        self.online_check = threading.Thread(target=work, name="revdistill-weights-online", daemon=True)
        self.online_check.start()

    def _set_offline(self, reason: str | None) -> None:
        self.offline = reason
        if reason:
            logger.info("ESM-2 downloads unavailable: %s", reason)
        self.refresh()

    # -- downloading ------------------------------------------------------------------------------------
    def download(self, alias: str) -> None:
        """Download one size in the background, with progress; then refresh the model choices."""
        from revdistill.esm.models.weights import check_online, download_weights  # noqa: PLC0415

        if alias in self.active:
            return
        if self.offline:
            raise RuntimeError(f"cannot download ESM-2 {alias}: {self.offline}")
        button, bar, label = self.buttons[alias], self.bars[alias], self.labels[alias]
        self.active.add(alias)
        button.disabled = True
        bar.value, bar.bar_style, bar.layout.display = 0.0, "info", "flex"
        start = time.monotonic()
        post = Throttle(self.state, lambda done, total: self._show_progress(alias, done, total, start))

        def work() -> Any:
            reason = check_online(timeout=10.0)
            if reason:
                raise RuntimeError(f"cannot download ESM-2 {alias}: {reason}")
            return download_weights([alias], self.state.options.weights_dir,
                                    progress=lambda done, total, _alias: post(done, total))

        def done(paths: Any) -> None:
            bar.value, bar.bar_style = 1.0, "success"
            logger.info("ESM-2 %s downloaded to %s", alias, paths[0])

        def finally_() -> None:
            self.active.discard(alias)
            if bar.bar_style != "success":
                bar.bar_style = "danger"
            button.disabled = False
            self.refresh()
            self.on_change()

        label.value = "<span class='rd-reason'>connecting…</span>"
        run_in_thread(self.state, f"download ESM-2 {alias}", work, done, finally_)

    def _show_progress(self, alias: str, done: int, total: int | None, start: float) -> None:
        bar = self.bars[alias]
        seconds = max(time.monotonic() - start, 1e-3)
        rate = done / seconds
        text = f"{format_bytes(done)} of {format_bytes(total)} · {rate / 1e6:.1f} MB/s"
        if total:
            bar.value = min(done / total, 1.0)
            if rate > 0 and total > done:
                text += f" · {int((total - done) / rate)} s left"
        self.labels[alias].value = f"<span class='rd-reason'>{html.escape(text)}</span>"
