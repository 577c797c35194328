"""Small widget helpers shared by the panels: figure construction, the error box, download links.

Plotly ``FigureWidget`` objects are always built with their initial data (Voila drops changes made
before the browser connects) and later changed in place inside ``batch_update``.
"""
from __future__ import annotations

import base64
import html
import threading
import time
from pathlib import Path
from typing import Any, Callable

import ipywidgets as widgets

from .state import DashboardState, ErrorRecord

__all__ = ["figure_widget", "as_figure_widget", "ErrorBox", "download_link", "section_title", "hint", "PLOT_TEMPLATE",
           "PLOT_MARGIN", "subsample_note", "run_in_thread", "Throttle"]

PLOT_TEMPLATE = "plotly_white"
#: Figure margins in pixels (raster views size their images to the plot area inside them).
PLOT_MARGIN = {"l": 50, "r": 20, "t": 50, "b": 45}
MAX_SHOWN_ERRORS = 3


def figure_widget(data: list[Any], layout: dict[str, Any], *, rows: int = 1, cols: int = 1,
                  subplot_titles: tuple[str, ...] | None = None,
                  configure: Callable[[Any], None] | None = None, **subplot_kwargs: Any) -> Any:
    """A plotly ``FigureWidget`` created with its traces and layout in one go.

    Parameters
    ----------
    data : list of (trace, row, col) or traces
        Traces; with subplots, ``(trace, row, col)`` tuples.
    layout : dict
        Layout properties applied before the widget is created.
    rows, cols : int
        Subplot grid (1 x 1 gives a plain figure).
    subplot_titles : tuple of str, optional
    configure : callable, optional
        ``configure(figure)`` on the plain ``go.Figure`` before it becomes a widget (axis types,
        titles, annotations). Under Voila, changes made to a widget before the browser connects are
        lost, so nothing may be changed after construction until then.
    **subplot_kwargs
        Passed to ``plotly.subplots.make_subplots``.

    Returns
    -------
    plotly.graph_objects.FigureWidget
    """
    import plotly.graph_objects as go  # noqa: PLC0415
    from plotly.subplots import make_subplots  # noqa: PLC0415

    if rows == 1 and cols == 1 and not subplot_titles:
        figure = go.Figure(data=list(data))
    else:
        figure = make_subplots(rows=rows, cols=cols, subplot_titles=subplot_titles, **subplot_kwargs)
        for trace, row, col in data:
            figure.add_trace(trace, row=row, col=col)
    figure.update_layout(template=PLOT_TEMPLATE, margin=dict(PLOT_MARGIN), **layout)
    if configure is not None:
        configure(figure)
    return as_figure_widget(figure)


def as_figure_widget(figure: Any) -> Any:
    """A ``FigureWidget`` of a finished ``go.Figure`` (under Voila, the class that imports the served bundle)."""
    return _figure_class()(figure)


def replace_widgets(box: Any, children: Any, old: Any) -> None:
    """Show ``children`` in ``box`` and close the widgets ``old`` they replace (None entries skipped).

    Panels draw new results into new figures instead of changing the ones on the page: a widget created with its
    data reaches the browser whole, while a change can be lost on a busy page (see :mod:`.serving`).
    """
    box.children = tuple(children)
    for widget in old:
        if widget is not None:
            widget.close()


def _figure_class() -> Any:
    """plotly's FigureWidget, or under Voila the subclass that imports the once-served bundle."""
    import plotly.graph_objects as go  # noqa: PLC0415

    from .serving import STATIC_FOLDER, bundle_name, served_figure_class, under_voila  # noqa: PLC0415

    if under_voila() and (Path.cwd() / STATIC_FOLDER / bundle_name()).is_file():
        return served_figure_class()
    return go.FigureWidget


def subsample_note(task: Any) -> str:
    """``"seeded subsample: n of N variants, seed s"`` for a subsampled task, else ``""`` (figures say it)."""
    from revdistill.experiment.tasks import SUBSAMPLE_NOTE  # noqa: PLC0415

    return next((note for note in getattr(task, "notes", []) if str(note).startswith(SUBSAMPLE_NOTE)), "")


def section_title(text: str, subtitle: str = "") -> widgets.HTML:
    """Heading of a panel, with an optional one-line explanation."""
    extra = f"<div class='rd-sub'>{html.escape(subtitle)}</div>" if subtitle else ""
    return widgets.HTML(f"<h3 class='rd-h'>{html.escape(text)}</h3>{extra}")


def hint(text: str) -> widgets.HTML:
    """Grey explanatory text."""
    return widgets.HTML(f"<span class='rd-hint'>{html.escape(text)}</span>")


class ErrorBox:
    """Shows errors reported to :class:`DashboardState` (type and message; the traceback is logged).

    Attributes
    ----------
    widget : ipywidgets.VBox
        Hidden while there is nothing to show.
    """

    def __init__(self, state: DashboardState) -> None:
        self.message = widgets.HTML(value="")
        self.dismiss = widgets.Button(description="Dismiss", button_style="", layout={"width": "90px"})
        self.dismiss.on_click(state.guard(self._clear, "dismiss error"))
        self.widget = widgets.HBox([self.message, self.dismiss], layout={"display": "none"})
        self.widget.add_class("rd-error")
        self._shown: list[ErrorRecord] = []
        state.on_error(self.show)

    def show(self, record: ErrorRecord) -> None:
        """Add ``record`` to the box and make it visible.

        An expected condition is shown as its plain message (it says what to do: a visitor has no server log);
        only a bug gets the "something went wrong" heading that points to the server log.
        """
        self._shown = (self._shown + [record])[-MAX_SHOWN_ERRORS:]
        items = "".join(
            f"<li><b>{html.escape(r.where)}</b>: {html.escape(r.message)}</li>" for r in self._shown
        )
        heading = ("" if all(r.expected for r in self._shown) else
                   "Something went wrong: this is a bug (the details are in the server log; please report it).")
        self.message.value = f"<div class='rd-error-text'>{heading}<ul>{items}</ul></div>"
        self.widget.layout.display = "flex"

    def _clear(self, _button: Any = None) -> None:
        self._shown = []
        self.message.value = ""
        self.widget.layout.display = "none"

    @property
    def visible(self) -> bool:
        """Whether an error is currently shown."""
        return self.widget.layout.display != "none"


def download_link(content: bytes, filename: str, mime: str, label: str) -> str:
    """HTML anchor that downloads ``content`` in the browser (a ``data:`` URI, no server route)."""
    encoded = base64.b64encode(content).decode("ascii")
    return (f"<a class='rd-download' download='{html.escape(filename)}' "
            f"href='data:{mime};base64,{encoded}'>{html.escape(label)}</a>")


def run_in_thread(state: DashboardState, where: str, work: Callable[[], Any], done: Callable[[Any], None],
                  finally_: Callable[[], None] | None = None, name: str = "revdistill-transfer") -> None:
    """Like :meth:`DashboardState.run_task`, on a thread of its own (a download must not wait behind a
    computation, nor hold one up); ``done``/``finally_`` run on the kernel's loop. Inline without a loop."""
    loop = state.event_loop()
    if loop is None:
        state.run_task(where, work, done, finally_=finally_)
        return

    def deliver(result: Any, error: BaseException | None) -> None:
        try:
            if error is not None:
                state.report_error(where, error)
            else:
                state.guard(done, where)(result)
        finally:
            if finally_ is not None:
                state.guard(finally_, where)()

    def body() -> None:
        try:
            result, error = work(), None
        except Exception as caught:  # noqa: BLE001 - reported in the app
            result, error = None, caught
        loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=body, name=name, daemon=True).start()


class Throttle:
    """Pass at most one call per ``interval`` seconds (and always the last: ``final=True``) to ``callback``,
    posted to the kernel's loop with :meth:`DashboardState.call_soon` (progress from worker threads)."""

    def __init__(self, state: DashboardState, callback: Callable[..., None], interval: float = 0.2) -> None:
        self.state, self.callback, self.interval = state, callback, interval
        self._last = float("-inf")

    def __call__(self, *args: Any, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._last >= self.interval:
            self._last = now
            self.state.call_soon(self.callback, *args)
