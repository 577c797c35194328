"""The one-line message of an expected failure, shared by the CLI and the dashboard's error box.

>>> describe_error(ValueError("k=900 must be between 1 and 640"))
'k=900 must be between 1 and 640'
>>> describe_error(ZeroDivisionError()) is None          # a bug, not a user error
True
"""
from __future__ import annotations

import errno
import os

from revdistill.io.files import LockBusyError

__all__ = ["describe_error"]


def _os_message(error: OSError) -> str:
    filename = f" {error.filename}" if error.filename else ""
    if error.errno is None or error.strerror is None:
        return str(error)
    own = error.strerror if error.strerror != os.strerror(error.errno) else None  # a message we wrote
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return own or (f"no space left on the device while writing{filename}; free some space and rerun the same "
                       f"command (finished work is kept)")
    if own:
        return own
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied:{filename} (check who owns it, or choose another place)"
    if error.errno == errno.EROFS:
        return f"read-only file system:{filename}"
    if error.errno == errno.EISDIR:
        return f"{filename.strip()} is a directory; give a file name"
    if error.errno == errno.ENOENT:
        return f"no such file or directory:{filename}"
    return f"{error.strerror}:{filename}" if filename else error.strerror


def describe_error(error: BaseException) -> str | None:
    """One line saying what went wrong, for an expected failure; ``None`` for an unexpected one (a bug).

    Expected: ``ValueError`` (bad input, damaged files, ``UnicodeDecodeError``), ``OSError`` (missing,
    unreadable or unwritable files, a full disk, the network), ``KeyError`` (an unknown name),
    ``RuntimeError`` (CUDA, a busy store), ``ImportError`` (a missing optional package), ``MemoryError``.
    """
    if isinstance(error, OSError):
        message = _os_message(error)
    elif isinstance(error, KeyError):
        message = error.args[0] if error.args and isinstance(error.args[0], str) else f"unknown key {error}"
    elif isinstance(error, ImportError):
        message = f"a required package is missing: {error}"
    elif isinstance(error, MemoryError):
        message = f"not enough memory{': ' + str(error) if str(error) else ''}; use a smaller input or batch"
    elif isinstance(error, (ValueError, RuntimeError, LockBusyError)):
        message = str(error)
    else:
        return None
    return " ".join(str(message).split()) or type(error).__name__
