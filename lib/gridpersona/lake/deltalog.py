"""Just enough of a local Delta log to tell who made a commit, without opening a snapshot.

Publishing (gridpersona.lake) asks, for a table's newest commits, which stage run made
each one; that is one small JSON line per commit (``commitInfo``, written first
by delta-rs and by Spark). Reading it directly costs a directory listing and a
line per commit, against a full snapshot load through delta-rs. Local paths
only: on object stores the lake falls back to delta-rs / Spark history.
"""

from __future__ import annotations

import json
import os
import re
from urllib.parse import unquote

# The commitInfo key a stage's commits carry (deltalake backend: custom metadata).
RUN_TAG_KEY = "gridpersona.run"
# delta-spark writes take one free-text userMetadata string; the tag rides in it as "gridpersona.run=<tag>".
_USER_METADATA_TAG = re.compile(r"(?:^|;)\s*gridpersona\.run=([^;]+)")
_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


def log_dir(table_path: str) -> str:
    return os.path.join(table_path, "_delta_log")


def log_stamp(table_path: str) -> int | None:
    """Changes whenever a commit file appears in the log (the folder's mtime); None without a log."""
    try:
        return os.stat(log_dir(table_path)).st_mtime_ns
    except OSError:
        return None


def commit_versions(table_path: str) -> list[int]:
    """Versions with a JSON commit file, ascending ([] when there is no log)."""
    try:
        names = os.listdir(log_dir(table_path))
    except OSError:
        return []
    return sorted(int(m.group(1)) for m in map(_COMMIT_FILE.match, names) if m)


def _commit_path(table_path: str, version: int) -> str:
    return os.path.join(log_dir(table_path), f"{version:020d}.json")


def _actions(table_path: str, version: int, kind: str):
    """The ``kind`` actions ("commitInfo", "add", ...) of commit ``version``, in log order (none when the file
    is gone). Lines are filtered as text first: a commit file can hold thousands of actions."""
    try:
        with open(_commit_path(table_path, version), encoding="utf-8") as fh:
            for line in fh:
                if f'"{kind}"' in line:
                    action = json.loads(line)
                    if kind in action:
                        yield action[kind]
    except OSError:
        return


def commit_info(table_path: str, version: int) -> dict | None:
    """The commitInfo action of ``version`` (None when the file is gone or holds none)."""
    return next(_actions(table_path, version, "commitInfo"), None)


def run_tag(info: dict | None) -> str | None:
    """The ``run_id/stage`` a commit was made by, or None for a commit made outside any stage."""
    if not info:
        return None
    tag = info.get(RUN_TAG_KEY)
    if tag:
        return str(tag)
    found = _USER_METADATA_TAG.search(info.get("userMetadata") or "")
    return found.group(1).strip() if found else None


def commit_adds(table_path: str, version: int) -> list[dict]:
    """The add actions (path, size, stats ...) of commit ``version``; none when its file is gone."""
    return list(_actions(table_path, version, "add"))


def added_paths(table_path: str, after_version: int) -> set[str]:
    """Relative paths of every file added by a commit after ``after_version``, as written in the log and
    URL-decoded (writers differ in how they escape partition folder names; a caller deciding whether a
    file is referenced must not miss it for its spelling)."""
    out: set[str] = set()
    for version in commit_versions(table_path):
        if version > after_version:
            for add in _actions(table_path, version, "add"):
                out.update((add["path"], unquote(add["path"])))
    return out


def _partition_of(action: dict, column: str) -> str | None:
    """The ``column`` partition value of an add/remove action: its ``partitionValues`` or, for a remove
    written without them (older writers), the ``column=value`` folder in its path."""
    values = action.get("partitionValues")
    if values is not None and column in values:
        return values[column]
    for part in unquote(action.get("path", "")).split("/")[:-1]:
        name, sep, value = part.partition("=")
        if sep and name == column:
            return value
    return None


def changed_partitions(table_path: str, column: str, after_version: int, upto_version: int) -> set[str | None] | None:
    """The ``column`` partition values (as written in the log: text) of every file added or removed by the
    commits ``after_version + 1 .. upto_version``; None when one of those commit files is gone (log cleanup):
    the caller cannot know what changed and must assume everything did."""
    versions = set(commit_versions(table_path))
    wanted = range(after_version + 1, upto_version + 1)
    if any(v not in versions for v in wanted):
        return None
    out: set[str | None] = set()
    for version in wanted:
        try:
            with open(_commit_path(table_path, version), encoding="utf-8") as fh:
                for line in fh:
                    if '"add"' not in line and '"remove"' not in line:
                        continue
                    action = json.loads(line)
                    for kind in ("add", "remove"):
                        if kind in action:
                            out.add(_partition_of(action[kind], column))
        except OSError:  # removed between the listing and the read
            return None
    return out
