"""Opening a file to read it, safely: only a regular file, never a directory, a FIFO, a
device or a socket (reading those blocks forever or never ends), with a clear graphc
error naming the path for a missing, unreadable or looping path.

The file is opened without blocking and checked on the open descriptor, so a path
that is swapped for a FIFO between a check and the open cannot hang the reader.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def open_regular_file(path, error: type, what: str = "file", max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for binary reading, or ``error(message)`` raised; ``max_bytes`` refuses
    a larger file before anything is read."""
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        raise error(f"{os.fspath(path)!s}: file not found") from None
    except ValueError:  # a NUL byte in the path
        raise error(f"{os.fspath(path)!r}: not a usable path (it contains a NUL byte)") from None
    except OSError as exc:
        why = "a symbolic-link loop" if exc.errno == errno.ELOOP else exc.strerror or type(exc).__name__
        raise error(f"{os.fspath(path)!s}: cannot open the {what} ({why})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{os.fspath(path)!s}: is a directory, not a {what}")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{os.fspath(path)!s}: is not a regular file (a FIFO, socket or device); "
                        f"refusing to read it as a {what}")
        if max_bytes is not None and info.st_size > max_bytes:
            raise error(f"{os.fspath(path)!s}: the {what} is larger than {max_bytes} bytes "
                        f"({info.st_size}); refusing to read it")
        if _FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
