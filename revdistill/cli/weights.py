"""``revdistill weights list | download``: the ESM-2 checkpoints on disk, and fetching them.

``revdistill weights list [--weights-dir DIR]`` prints one row per model (present / partial / missing,
size on disk, approximate download size, path). ``revdistill weights download 8M,35M,150M
[--weights-dir DIR]`` downloads them (progress on stderr; rerun to resume an interrupted download)
into the folder ``revdistill embed`` and ``load_esm2`` read. The source is fair-esm's public URLs, or
``--base-url`` / ``$REVDISTILL_WEIGHTS_URL``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TextIO


def register(subparsers) -> None:
    """Add the ``weights`` subcommand with its ``list`` and ``download`` actions."""
    parser = subparsers.add_parser(
        "weights", help="list or download the ESM-2 checkpoints",
        description="List the ESM-2 checkpoints on disk, or download them (resumable, size and digest checked) "
                    "into the folder `revdistill embed` reads (default: fair-esm's torch-hub cache).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="what is present, partial or missing, with sizes")
    download = actions.add_parser("download", help="download checkpoints, e.g. 8M,35M,150M")
    download.add_argument("models", help="comma-separated models: 8M,35M,150M,650M,3B,15B (or fair-esm names)")
    download.add_argument("--base-url", default=None,
                          help="serves models/<name>.pt and regression/<name>-contact-regression.pt "
                               "(default: $REVDISTILL_WEIGHTS_URL, else https://dl.fbaipublicfiles.com/fair-esm)")
    for action in (listing, download):
        action.add_argument("--weights-dir", type=Path, default=None,
                            help="folder of the esm2_*.pt checkpoints (default: torch hub cache)")
    listing.set_defaults(func=run_list)
    download.set_defaults(func=run_download)


def format_bytes(n: int | None) -> str:
    """``1234567`` → ``'1.2 MB'`` (decimal units); None → ``'?'``."""
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def run_list(args: argparse.Namespace) -> int:
    """Print the weights table; return 0."""
    from revdistill.esm.models.weights import weights_status

    statuses = weights_status(args.weights_dir)
    rows = [("model", "state", "on disk", "download", "path")]
    for status in statuses:
        state = status.state if status.state != "partial" else f"partial ({format_bytes(status.partial_bytes)})"
        if status.present and not status.regression_present:
            state += ", no contact head"
        rows.append((status.alias, state, format_bytes(status.size_on_disk) if status.size_on_disk else "-",
                     "~" + format_bytes(status.expected_bytes), str(status.path)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
    folder = statuses[0].path.parent
    print(f"\n{sum(s.present for s in statuses)} of {len(statuses)} present in {folder}; download sizes are "
          f"approximate. Get more with `revdistill weights download 8M,35M,150M`.")
    return 0


class ProgressPrinter:
    """Download progress on a stream: one line rewritten in place on a terminal, else a line per 10 %."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}

    def __call__(self, done: int, total: int | None, label: str) -> None:
        tty = getattr(self.stream, "isatty", lambda: False)()
        now = time.monotonic()
        last_time, last_step = self._last.get(label, (0.0, -1))
        finished = total is not None and done >= total
        step = int(10 * done / total) if total else done // (100 << 20)
        if tty and not finished and now - last_time < self.interval:
            return
        if not tty and not finished and step == last_step:
            return
        if not tty and finished and last_step == 10:
            return
        self._last[label] = (now, 10 if finished else step)
        percent = f" {100 * done / total:5.1f}%" if total else ""
        text = f"{label}: {format_bytes(done)} of {format_bytes(total)}{percent}"
        if tty:
            self.stream.write("\r" + text.ljust(60) + ("\n" if finished else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def run_download(args: argparse.Namespace) -> int:
    """Download the models named; return 0, or raise a one-line error for ``main`` to print."""
    from revdistill.io.download import DownloadError
    from revdistill.esm.models.registry import parse_models
    from revdistill.esm.models.weights import check_online, download_weights, weights_base_url

    aliases = parse_models(args.models, "models", trained=True)
    base = weights_base_url(args.base_url)
    reason = check_online(base + "/")
    if reason is not None:
        raise DownloadError(f"offline: {reason}; nothing was downloaded")
    print(f"downloading {', '.join(aliases)} from {base}", file=sys.stderr)
    paths = download_weights(aliases, args.weights_dir, progress=ProgressPrinter(), base_url=args.base_url)
    for alias, path in zip(aliases, paths):
        print(f"{alias}: {path}")
    return 0
