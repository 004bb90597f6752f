"""Writer locks: one exclusive, non-blocking ``flock`` per lake table.

A lock is a file ``<lake>/_ops/locks/<layer.table>.lock``. Whoever holds the
kernel lock on it writes the table; the file's content names the holder (run,
stage, pid, host, since) so a refused writer can say who is in its way. The
kernel releases the lock when the holding process ends in any way (``kill -9``
included), so a crash never leaves a stale lock behind: the content of an
unheld lock file is history, not a claim.

``flock`` locks belong to an open file description, so two Lake objects in one
process exclude each other just as two processes do.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass

LOCK_DIR = os.path.join("_ops", "locks")


def lock_path(lake_root: str, table: str) -> str:
    return os.path.join(lake_root, LOCK_DIR, f"{table}.lock")


@dataclass
class TableLock:
    """A held lock; ``release()`` (or process exit) frees it."""

    table: str
    path: str
    fd: int | None

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


def owner_record(run_id: str | None = None, stage: str | None = None) -> dict:
    """What a holder writes into its lock file."""
    return {"run_id": run_id, "stage": stage, "pid": os.getpid(), "host": socket.gethostname(),
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def try_lock(lake_root: str, table: str, owner: dict, wait_seconds: float = 0.0) -> TableLock | None:
    """Take the lock of ``table`` and record ``owner`` in it; None when another holder has it
    (after waiting up to ``wait_seconds``, polling)."""
    path = lock_path(lake_root, table)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode(), 0)
    return TableLock(table, path, fd)


def read_owner(path: str) -> dict | None:
    """The holder recorded in a lock file (None when unreadable or empty)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def _proc_locks_holds(path: str) -> bool | None:
    """From Linux's /proc/locks, without touching the lock: whether a FLOCK is held on ``path``'s inode
    (None where /proc/locks is unavailable)."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == wanted for parts in map(str.split, lines))


def is_held(path: str) -> bool:
    """Whether some open file description holds the lock at ``path`` now: read from /proc/locks on Linux, so
    a probe never takes the lock from under a writer starting at that instant; elsewhere by trying it."""
    if not os.path.exists(path):
        return False
    held = _proc_locks_holds(path)
    if held is not None:
        return held
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def held_locks(lake_root: str) -> list[tuple[str, dict | None]]:
    """(table, owner) of every lock held now under ``lake_root``."""
    folder = os.path.join(lake_root, LOCK_DIR)
    if not os.path.isdir(folder):
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".lock"):
            path = os.path.join(folder, name)
            if is_held(path):
                out.append((name[:-len(".lock")], read_owner(path)))
    return out


def pid_alive(pid: int | None) -> bool:
    """Whether a process with ``pid`` exists on this host."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_owner(owner: dict | None) -> str:
    """'run 3f2a... (stage clean, pid 123 on host, since 10:32:05 UTC)' for a conflict message."""
    if not owner:
        return "another writer"
    since = owner.get("since") or ""
    try:
        since = dt.datetime.fromisoformat(since).astimezone(dt.timezone.utc).strftime("%H:%M:%S UTC")
    except ValueError:
        pass
    where = f"pid {owner.get('pid')}" + (f" on {owner['host']}" if owner.get("host") != socket.gethostname() else "")
    if owner.get("run_id"):
        return f"run {owner['run_id']} (stage {owner.get('stage')}, {where}, since {since})"
    return f"another writer ({where}, since {since})"
