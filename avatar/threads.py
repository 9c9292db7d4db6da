"""The process's threading policy: one pool (TBB) for the rasterizer, torch kept off the cores
it would fight for, and a thread count that follows the cores other processes leave free.

Why (measured on 2 cores, docs/performance.md): a process used to hold two OpenMP runtimes,
torch's libgomp and the system's, which numba's "omp" layer loads by file name. Each keeps a
team per calling thread whose idle workers spin for a while after every parallel region, so
with another job on the machine, or several viewer tabs rendering at once, spinning workers
took the cores the working threads needed. The policy:

- numba's kernels run on TBB (`use_tbb`, called by `avatar.cpu_raster` before its first
  kernel): one work-stealing pool shared by every calling thread, safe for concurrent callers
  (the viewer renders one frame per tab at once), whose idle workers sleep. The `tbb` wheel
  puts libtbb in the environment's lib folder, off the loader's path, so it is loaded here by
  its full path first. Without it numba falls back to "omp" (still safe for concurrent
  callers; "workqueue" is not and is never chosen).
- Interactive processes (viewer, export, demo: `configure_interactive`) give torch one
  intra-op thread: its per-frame work (skinning, binding) is small, the tabs are the
  parallelism, and torch's OpenMP team then never starts. `OMP_WAIT_POLICY=PASSIVE` is set
  as well for any OpenMP runtime loaded later; an OpenMP runtime reads it once, when it
  loads, so it only counts when set before `import torch`.
- Training (`TrainingThreads`) is the opposite case: one long torch loop that owns the
  machine, where spinning workers pay (passive waits cost 1.7x per step) but only while no
  other process wants the cores. Its thread count follows the cores left free by others,
  re-read every few seconds from /proc/stat, unless the user fixed it with --threads.

Environment variables the user sets (NUMBA_THREADING_LAYER, OMP_WAIT_POLICY) always win.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

#: The libtbb numba's TBB layer links against (TBB_INTERFACE_VERSION >= 12060, oneTBB 2021.6).
_TBB_SONAMES = ("libtbb.so.12", "libtbb.12.dylib", "tbb12.dll")

_tbb_path: str | None = None


def _find_tbb() -> Path | None:
    """libtbb from the `tbb` wheel: its files as the installer recorded them, else sys.prefix."""
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("tbb")
        for f in dist.files or ():
            if f.name in _TBB_SONAMES:
                path = Path(dist.locate_file(f)).resolve()
                if path.exists():
                    return path
    except PackageNotFoundError:
        pass
    for folder in ("lib", "Library/bin"):
        for name in _TBB_SONAMES:
            path = Path(sys.prefix, folder, name)
            if path.exists():
                return path
    return None


def use_tbb() -> str | None:
    """Make numba's parallel kernels run on TBB when it is installed; return libtbb's path.

    Must run before numba starts its threads (its first parallel kernel); later it changes
    nothing. Leaves the choice alone when the user set NUMBA_THREADING_LAYER.
    """
    global _tbb_path
    if _tbb_path is not None:
        return _tbb_path
    import numba

    if os.environ.get("NUMBA_THREADING_LAYER"):
        return None
    path = _find_tbb()
    if path is not None:
        try:
            # Global, so numba's tbbpool extension finds the soname already loaded.
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            _tbb_path = str(path)
        except OSError as err:
            log.debug("libtbb at %s did not load: %s", path, err)
    # TBB if it loads, else OpenMP; never "workqueue", which is unsafe for concurrent callers.
    numba.config.THREADING_LAYER = "threadsafe"
    return _tbb_path


def threading_layer() -> str:
    """The threading layer numba's kernels run on ("tbb", "omp"), starting its pool if needed."""
    import numba

    numba.get_num_threads()  # launches the threads, so the layer is chosen
    return numba.threading_layer()


def configure_interactive() -> None:
    """The policy for the viewer, export and demo: torch on one intra-op thread, OpenMP
    workers that sleep when idle. Call it before `import torch` where possible (the CLI does);
    the torch thread count applies whenever it is called."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(1)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch on `count` intra-op threads (of the calling thread) for a block, then as before.

    Rendering frames in a loop (export) wants 1: the per-frame torch work (FLAME, binding) is
    small, and torch's OpenMP team would otherwise spin on the cores numba's TBB workers
    rasterize on (measured: export 36-41 -> 41-51 frames/s at 512 px, docs/performance.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine so far, in clock ticks (Linux)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user time
    return total - idle, total


class TrainingThreads:
    """torch's thread count for a training loop: the cores other processes leave free.

    Call `update()` from the thread that runs the torch ops (OpenMP keeps the count per
    thread) once per step; every `period_s` seconds it compares the machine's busy CPU time
    with this process's own and sets `torch.set_num_threads` to the cores nobody else used
    (at least 1). With `fixed` (--threads) it sets that once and never looks again.
    """

    def __init__(self, fixed: int | None = None, *, period_s: float = 5.0) -> None:
        import torch

        self.cores = os.cpu_count() or 1
        self.period_s = period_s
        self.fixed = fixed
        self.threads = max(1, fixed) if fixed is not None else torch.get_num_threads()
        torch.set_num_threads(self.threads)
        self._mark = self._sample()

    def _sample(self) -> tuple[float, tuple[int, int] | None, float]:
        own = os.times()
        return time.monotonic(), _cpu_jiffies(), own.user + own.system

    def update(self) -> int:
        """The thread count to use now (changed at most every `period_s` seconds)."""
        if self.fixed is not None:
            return self.threads
        now = time.monotonic()
        if now - self._mark[0] < self.period_s:
            return self.threads
        mark, self._mark = self._mark, self._sample()
        jiffies0, jiffies1 = mark[1], self._mark[1]
        if jiffies0 is None or jiffies1 is None:
            return self.threads
        total = jiffies1[1] - jiffies0[1]
        if total <= 0:
            return self.threads
        busy_cores = self.cores * (jiffies1[0] - jiffies0[0]) / total
        own_cores = (self._mark[2] - mark[2]) / max(self._mark[0] - mark[0], 1e-9)
        others = max(0.0, busy_cores - own_cores)
        # a core counts as taken when another process used more than a third of it
        wanted = max(1, min(self.cores, self.cores - int(others + 2 / 3)))
        if wanted != self.threads:
            import torch

            log.info("training on %d threads (other processes use %.1f cores)", wanted, others)
            torch.set_num_threads(wanted)
            self.threads = wanted
        return self.threads
