"""Local HTTP servers for download tests: the stdlib static handler (no ``Range``) and a Range-capable one.

Both serve a folder, record every request (method, path, ``Range`` header, status, body bytes sent) and
can cut one response short to simulate a broken connection.

>>> with serve_directory(folder, ranges=True) as server:       # doctest: +SKIP
...     server.url + "/models/esm2_t6_8M_UR50D.pt"
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """The stdlib static-file handler (which ignores ``Range``), recording requests."""

    requests: list = []
    cut: dict | None = None  # {"after": bytes sent before cutting, "min_length"/"max_length": bodies cut}

    def log_message(self, *args) -> None:  # quiet
        pass

    def send_head(self):  # noqa: D102 (http.server API)
        type(self).requests.append({"method": self.command, "path": self.path,
                                    "range": self.headers.get("Range"), "status": None, "sent": 0})
        return super().send_head()

    def send_response(self, code, message=None):  # noqa: D102
        if type(self).requests and type(self).requests[-1]["status"] is None:
            type(self).requests[-1]["status"] = code
        super().send_response(code, message)

    def _body_length(self, source) -> int:
        length = getattr(self, "_range_length", None)
        return length if length is not None else os.fstat(source.fileno()).st_size

    def copyfile(self, source, outputfile) -> None:  # noqa: D102
        length = self._body_length(source)
        cut = type(self).cut
        limit = length
        if cut is not None and cut.get("min_length", 0) <= length <= cut.get("max_length", length):
            limit = min(length, cut["after"])
            type(self).cut = None
            self.close_connection = True
        sent = 0
        while sent < limit:
            chunk = source.read(min(64 * 1024, limit - sent))
            if not chunk:
                break
            outputfile.write(chunk)
            sent += len(chunk)
        type(self).requests[-1]["sent"] = sent


class RangeHandler(RecordingHandler):
    """Adds single-range ``Range: bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` support (206, 416)."""

    def send_head(self):  # noqa: D102
        self._range_length = None
        header = self.headers.get("Range")
        path = self.translate_path(self.path)
        if header is None or not os.path.isfile(path):
            return super().send_head()
        type(self).requests.append({"method": self.command, "path": self.path, "range": header,
                                    "status": None, "sent": 0})
        size = os.path.getsize(path)
        match = _RANGE.fullmatch(header.strip())
        if match is None or match.group(1) == match.group(2) == "":
            self.send_error(400, "bad Range header")
            return None
        if match.group(1) == "":
            start, end = max(0, size - int(match.group(2))), size - 1
        else:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start >= size or end < start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        handle = open(path, "rb")
        handle.seek(start)
        self._range_length = end - start + 1
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(self._range_length))
        self.end_headers()
        return handle


@dataclass
class Server:
    """A running local server: its base ``url``, the folder it serves and its request log."""

    url: str
    root: Path
    handler: type = field(repr=False)

    @property
    def requests(self) -> list[dict]:
        return self.handler.requests

    def cut_next(self, after: int, min_length: int = 0, max_length: int | None = None) -> None:
        """Cut the next response whose body has ``min_length`` to ``max_length`` bytes after ``after`` bytes."""
        self.handler.cut = {"after": after, "min_length": min_length}
        if max_length is not None:
            self.handler.cut["max_length"] = max_length

    def add(self, relative: str, data: bytes) -> str:
        """Serve ``data`` at ``relative``; return its URL."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return f"{self.url}/{relative}"

    def copy(self, source: Path, relative: str) -> str:
        """Serve a copy of ``source`` at ``relative``; return its URL."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        return f"{self.url}/{relative}"


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # clients that hang up early are expected
        pass


@contextlib.contextmanager
def serve_directory(root: Path, ranges: bool = True) -> Iterator[Server]:
    """Serve ``root`` on 127.0.0.1 (a free port) in a thread, with or without ``Range`` support."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = RangeHandler if ranges else RecordingHandler
    handler = type("Handler", (base,), {"requests": [], "cut": None})
    httpd = _QuietServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", root, handler)
    finally:
        httpd.shutdown()
        httpd.server_close()


def refused_url(path: str = "x") -> str:
    """A URL on a local port nobody listens on (connections are refused: 'offline')."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path}"


def serve_checkpoint(server: Server, alias: str = "8M", seed: int = 3):
    """Publish a random-init ESM-2 of a real model's architecture under its file names, laid out like fair-esm's
    server (a download is checked to be a checkpoint of the expected architecture).

    Writes ``models/<name>.pt`` and ``regression/<name>-contact-regression.pt`` (fair-esm's checkpoint
    format, :func:`revdistill.esm.models.loading.save_esm2_checkpoint`) and returns the saved model.
    """
    from revdistill.esm.models.loading import save_esm2_checkpoint, tiny_esm2
    from revdistill.esm.models.registry import get_spec

    spec = get_spec(alias)
    model, _ = tiny_esm2(spec.layers, spec.dim, spec.heads, seed=seed)
    model_path, regression_path = save_esm2_checkpoint(model, server.root / "models" / f"{spec.name}.pt")
    (server.root / "regression").mkdir(exist_ok=True)
    regression_path.replace(server.root / "regression" / regression_path.name)
    return model
