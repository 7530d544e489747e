"""``lvbd plot RUN [RUN ...]``: learning curves from ``metrics.jsonl`` as PNG files."""
from __future__ import annotations

import argparse
import json
import logging
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LvbdError(f"cannot create output folder {out}: {err.strerror}") from None
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
    written.append(out / "si_sdri.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
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
        written.append(out / "loss_terms.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 2.5))
    for name, rows in runs.items():
        pts = [(r["step"], r["lr"]) for r in rows if "lr" in r]
        if pts:
            ax.semilogy(*zip(*pts), label=name)
    ax.set(xlabel="step", ylabel="learning rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / "lr.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


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
