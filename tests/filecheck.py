"""Test helper: prove that a failing call changed no file (SHA-256 of every file before and after)."""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path


def digests(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (files or folders); lock files (empty, never data) are skipped."""
    found = {}
    for root in map(Path, roots):
        files = [root] if root.is_file() else sorted(path for path in root.rglob("*") if path.is_file())
        for path in files:
            if path.suffix != ".lock":
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@contextlib.contextmanager
def unchanged(*roots: Path):
    """Assert that no file under ``roots`` was created, changed or removed inside the block."""
    before = digests(*roots)
    yield before
    after = digests(*roots)
    assert after == before, {key: (before.get(key), after.get(key)) for key in set(before) | set(after)
                             if before.get(key) != after.get(key)}
