"""``lvbd plot RUN [RUN ...]``: learning curves from ``metrics.jsonl`` as PNG files; the bar and
curve charts of ``lvbd experiment``."""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from .errors import LvbdError

log = logging.getLogger(__name__)


def read_metrics(run_dir: str | Path) -> list[dict]:
    if not Path(run_dir).is_dir():
        raise LvbdError(f"no such run folder: {run_dir}")
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise LvbdError(f"no metrics.jsonl in {run_dir}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise LvbdError(f"{path}:{number} is not valid JSON") from None
    return rows


def plot_runs(run_dirs: list[str | Path], out: str | Path) -> list[Path]:
    """Write ``si_sdri.png`` (train and valid), ``loss_terms.png`` and ``lr.png`` into ``out``.

    Every run is read before anything is created: a bad run folder leaves no empty ``out``.
    """
    runs = {Path(r).name: read_metrics(r) for r in run_dirs}
    plt = _pyplot()
    out = _folder(out)
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in runs.items():
        train = [(r["step"], r["train_si_sdri"]) for r in rows if "train_si_sdri" in r]
        valid = [(r["step"], r["valid_si_sdri"]) for r in rows if "valid_si_sdri" in r]
        if train:
            line, = ax.plot(*zip(*train), alpha=0.6, label=f"{name} train")
            color = line.get_color()
        else:
            color = None
        if valid:
            ax.plot(*zip(*valid), "o-", color=color, label=f"{name} valid")
    ax.set(xlabel="step", ylabel="SI-SDRi (dB)", title="Separation quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, out / "si_sdri.png"))
    terms = sorted({k for rows in runs.values() for r in rows for k in r
                    if k in ("loss", "sep", "mix", "kl", "tc", "perm", "vol")})
    if terms:
        fig, axes = plt.subplots(len(terms), 1, figsize=(7, 1.8 * len(terms)), sharex=True,
                                 squeeze=False)
        for ax, term in zip(axes[:, 0], terms):
            for name, rows in runs.items():
                pts = [(r["step"], r[term]) for r in rows if term in r]
                if pts:
                    ax.plot(*zip(*pts), label=name)
            ax.set_ylabel(term)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        axes[0, 0].legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out / "loss_terms.png"))
    fig, ax = plt.subplots(figsize=(7, 2.5))
    for name, rows in runs.items():
        pts = [(r["step"], r["lr"]) for r in rows if "lr" in r]
        if pts:
            ax.semilogy(*zip(*pts), label=name)
    ax.set(xlabel="step", ylabel="learning rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, out / "lr.png"))
    return written


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _folder(out: str | Path) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LvbdError(f"cannot create output folder {out}: {err.strerror}") from None
    return out


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (a temp file, then ``os.replace``) and close it."""
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    fig.clear()
    _pyplot().close(fig)
    return path


def bar_chart(path: str | Path, groups: list[str], series: dict[str, list[tuple]],
              ylabel: str, title: str) -> Path:
    """Grouped bars: ``series[name][i]`` = (mean, 95 % CI half-width or None) of group i;
    NaN means are left out."""
    import numpy as np

    plt = _pyplot()
    path = Path(path)
    _folder(path.parent)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 4))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        means = [np.nan if v[0] is None else v[0] for v in values]
        halves = [0.0 if v[1] is None else v[1] for v in values]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=halves, capsize=2,
               label=name)
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.set(ylabel=ylabel, title=title)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def curve_panels(path: str | Path, panels: dict[str, dict[str, tuple]], xlabel: str,
                 ylabel: str) -> Path:
    """One panel per key of ``panels``; each holds lines ``{label: (xs, ys, style)}`` (a
    matplotlib format string such as ``"o-"`` or ``"--"``)."""
    plt = _pyplot()
    path = Path(path)
    _folder(path.parent)
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.6),
                             squeeze=False, sharey=True)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for label, (xs, ys, style) in lines.items():
            if len(xs):
                ax.plot(xs, ys, style, label=label, markersize=3)
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel(ylabel)
    fig.tight_layout()
    return _save(fig, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="training run folders (each with its metrics.jsonl)")
    parser.add_argument("-o", "--out", default=None, metavar="DIR",
                        help="where the PNG files go (default: the first RUN_DIR/plots)")


def run(args: argparse.Namespace) -> int:
    out = args.out or Path(args.runs[0]) / "plots"
    for path in plot_runs(args.runs, out):
        log.info("wrote %s", path)
    return 0
