"""One mmbal process per folder: an exclusive ``flock`` on ``<folder>/.mmbal.lock``.

A run folder (``mmbal train --out``) and a sweep's results folder are written by exactly one
process; a second one is refused in one line naming the holder (pid and host, written into the lock
file). The kernel drops the lock when its holder exits, even on ``kill -9``, so a stale lock file
never blocks a resume. ``flock`` is advisory and, on NFS, only as good as the server's locking.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainables.errors import ConfigError

LOCK_NAME = ".mmbal.lock"


@contextmanager
def folder_lock(folder: str | os.PathLike, key: str) -> Iterator[None]:
    """Hold ``folder`` (created if needed) for this process; ``key`` names the option in the error line.

    Raises:
        ConfigError: another process holds the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "holder not known yet"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise ConfigError(
            key, f"{folder} is in use by another mmbal run ({holder}); wait for it to end or choose another folder"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a run waiting on it)
