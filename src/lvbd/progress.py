"""Progress reporting: whether to draw bars, and parallel jobs behind one bar."""
from __future__ import annotations

import multiprocessing
import sys

__all__ = ["show_progress", "run_jobs"]


def show_progress(quiet: bool) -> bool:
    """tqdm bars only when not ``--quiet`` and stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


def run_jobs(function, jobs: list, n_workers: int, progress: bool, desc: str,
              unit: str = "clip", sizes: list[int] | None = None,
              start_method: str | None = None) -> list:
    """``[function(job) for job in jobs]`` on ``n_workers`` processes (results in order); a tqdm bar
    counting ``sizes[i]`` units per job when ``progress``. ``start_method`` ``"spawn"`` gives
    fresh workers (for a parent that has run torch: forked OpenMP pools can hang)."""
    if not jobs:
        return []
    sizes = sizes or [1] * len(jobs)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(sizes), desc=desc, unit=unit, dynamic_ncols=True)
    results = []
    pool = (multiprocessing.get_context(start_method).Pool(n_workers)
            if n_workers > 1 and len(jobs) > 1 else None)
    try:
        done = pool.imap(function, jobs) if pool is not None else map(function, jobs)
        for result, size in zip(done, sizes):
            results.append(result)
            if bar:
                bar.update(size)
    finally:
        if bar:
            bar.close()
        if pool is not None:
            pool.terminate()
    return results
