"""Peak resident memory of a process tree, sampled by a background thread.

Used by the benchmark for the Spark side (this Python driver + its JVM child +
the JVM's Python workers) and for the reference run (a child process).
"""

from __future__ import annotations

import threading
import time

import psutil


def _kind(proc: psutil.Process, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "root"
    try:
        name = proc.name().lower()
    except psutil.Error:
        return "other"
    return "jvm" if name.startswith("java") else "other"


class PeakRss:
    """Sample the RSS of ``pid`` and its descendants every ``interval_s`` seconds.

    ``peak_mb`` holds, in MB, the peak of each kind (``root``: the process itself,
    RSS; ``jvm``: java descendants, RSS; ``other``: any other descendant such as
    PySpark's Python workers, unique set size), of ``root+jvm`` (the driver + JVM figure) and of ``total``.
    Each peak is the maximum over samples of that sum, so ``root+jvm`` is a
    memory level both held at one moment, not a sum of separate peaks.
    """

    def __init__(self, pid: int | None = None, interval_s: float = 0.2):
        self.root = psutil.Process(pid) if pid else psutil.Process()
        self.interval_s = interval_s
        self.peak_mb: dict[str, float] = {"root": 0.0, "jvm": 0.0, "other": 0.0, "root+jvm": 0.0, "total": 0.0}
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        sums = {"root": 0.0, "jvm": 0.0, "other": 0.0}
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for proc in procs:
            try:
                kind = _kind(proc, self.root.pid)
                if kind == "other":
                    # PySpark's Python workers are forks of one daemon: their RSS counts the
                    # same shared pages again and again, so count their unique pages (USS).
                    sums[kind] += proc.memory_full_info().uss / 2**20
                else:
                    sums[kind] += proc.memory_info().rss / 2**20
            except psutil.Error:
                continue  # a worker that exited between listing and reading
        sums["root+jvm"] = sums["root"] + sums["jvm"]
        sums["total"] = sums["root+jvm"] + sums["other"]
        for key, value in sums.items():
            self.peak_mb[key] = max(self.peak_mb[key], value)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakRss":
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()

    def as_dict(self) -> dict:
        return {**{f"peak_{k.replace('+', '_')}_mb": round(v, 1) for k, v in self.peak_mb.items()},
                "samples": self.samples, "interval_s": self.interval_s}


def tree_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds used so far by a process and its live descendants."""
    root = psutil.Process(pid) if pid else psutil.Process()
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def high_water_mb(pid: int) -> float | None:
    """The kernel's peak-RSS mark (VmHWM) of one process, in MB; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_with_peak(popen, interval_s: float = 0.2) -> tuple[int, dict]:
    """Wait for a child process while sampling its tree's RSS; returns (exit code, PeakRss.as_dict())."""
    watch = PeakRss(popen.pid, interval_s)
    watch.sample()
    while popen.poll() is None:
        watch.sample()
        time.sleep(interval_s)
    return popen.returncode, watch.as_dict()
