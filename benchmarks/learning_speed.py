"""Validation SI-SDRi against CPU-minutes for several training recipes, run side by side.

    .venv/bin/python benchmarks/learning_speed.py --minutes 20 --out results/learning_speed \\
        --variant lvbd=configs/default.yaml \\
        --variant convtasnet=configs/default.yaml,model.arch=convtasnet,loss.pit=upit

Each variant is one ``lvbd train`` process with ``train.threads=1`` and a wall-time budget
(``train.budget_minutes``); ``--parallel`` processes run at a time (two by default, so that load
from other work hits the variants alike). Every run logs its own process CPU time
(``cpu_minutes`` in metrics.jsonl), so the comparison is at equal CPU time, not equal steps.
A run folder that already holds a finished run is reported, not re-run (``--report-only`` reports
existing folders, e.g. long runs continued with ``lvbd train --resume``).

Prints, per variant, the validation SI-SDRi (fixed validation mixtures, dB) at each CPU-minute
mark (interpolated between the validations around it; "-" outside the run), the gap to the first variant (the peer), and
writes ``learning_speed.png`` and ``learning_speed.json`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("learning_speed")
ROOT = Path(__file__).resolve().parents[1]


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """"name=config[,section.key=value,...]" -> (name, config, overrides)."""
    name, _, rest = text.partition("=")
    if not name or not rest:
        raise SystemExit(f"--variant expects NAME=CONFIG[,key=value,...], got {text!r}")
    config, *overrides = rest.split(",")
    return name, config, overrides


def curve(run_dir: Path) -> list[tuple[float, int, float]]:
    """(cpu_minutes, step, valid SI-SDRi) of every validation row of a run."""
    rows = []
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "valid_si_sdri" in row and "cpu_minutes" in row:
            rows.append((float(row["cpu_minutes"]), int(row["step"]), float(row["valid_si_sdri"])))
    return rows


def at_mark(rows: list[tuple[float, int, float]], minutes: float) -> float | None:
    """Validation SI-SDRi at ``minutes`` of CPU time, linearly interpolated between the two
    validations around it; None before the first or after the last validation (within 5 %)."""
    if not rows or minutes < rows[0][0] * 0.95 or minutes > rows[-1][0] * 1.05:
        return None
    if minutes <= rows[0][0]:
        return rows[0][2]
    for (m0, _, v0), (m1, _, v1) in zip(rows, rows[1:]):
        if m0 <= minutes <= m1:
            return v0 + (v1 - v0) * (minutes - m0) / max(m1 - m0, 1e-9)
    return rows[-1][2]


def launch(name: str, config: str, overrides: list[str], out: Path, minutes: float,
           valid_every: int) -> subprocess.Popen | None:
    run_dir = out / name
    if (run_dir / "last.safetensors").exists():
        log.info("%s: %s already holds a run, reporting it", name, run_dir)
        return None
    sets = ["train.threads=1", f"train.budget_minutes={minutes}", f"train.valid_every={valid_every}",
            *overrides]
    cmd = [sys.executable, "-m", "lvbd", "train", "--config", config, "--run-dir", str(run_dir), "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log.info("%s: %s", name, " ".join(cmd))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=(run_dir / "train.log").open("w"),
                            stderr=subprocess.STDOUT)


def plot(curves: dict[str, list], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in curves.items():
        if rows:
            ax.plot([r[0] for r in rows], [r[2] for r in rows], marker=".", label=name)
    ax.set_xlabel("CPU-minutes (1 thread)")
    ax.set_ylabel("validation SI-SDRi (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME=CONFIG[,section.key=value,...]; the first is the peer")
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-time budget per run")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--valid-every", type=int, default=100)
    parser.add_argument("--marks", default="2,4,6,8,10,12,20,40,60",
                        help="CPU-minute marks of the table")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "learning_speed")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    variants = [parse_variant(v) for v in args.variant]
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        pending, running = list(variants), []
        while pending or running:
            while pending and len(running) < args.parallel:
                name, config, overrides = pending.pop(0)
                proc = launch(name, config, overrides, args.out, args.minutes, args.valid_every)
                if proc is not None:
                    running.append((name, proc))
            for name, proc in list(running):
                if proc.poll() is not None:
                    running.remove((name, proc))
                    if proc.returncode:
                        log.error("%s: exit %d, see %s", name, proc.returncode,
                                  args.out / name / "train.log")
            time.sleep(2)
    curves = {name: curve(args.out / name) for name, _, _ in variants}
    marks = [float(m) for m in args.marks.split(",")]
    peer = variants[0][0]
    header = f"{'variant':<28}" + "".join(f"{m:>8g}" for m in marks) + "   steps  s/step"
    lines = ["validation SI-SDRi (dB) by CPU-minutes", header]
    for name, rows in curves.items():
        cells = []
        for m in marks:
            v = at_mark(rows, m)
            cells.append(f"{v:8.2f}" if v is not None else f"{'-':>8}")
        steps = rows[-1][1] if rows else 0
        spm = (rows[-1][0] * 60 / steps) if steps else float("nan")
        lines.append(f"{name:<28}" + "".join(cells) + f"{steps:>8d}{spm:8.2f}")
    for name, rows in curves.items():
        if name == peer:
            continue
        gaps = []
        for m in marks:
            a, b = at_mark(rows, m), at_mark(curves[peer], m)
            gaps.append(f"{a - b:+8.2f}" if a is not None and b is not None else f"{'-':>8}")
        lines.append(f"{name + ' - ' + peer:<28}" + "".join(gaps))
    report = "\n".join(lines)
    print(report)
    (args.out / "learning_speed.json").write_text(json.dumps(
        {"marks": marks, "curves": curves, "variants": variants}, indent=1))
    plot(curves, args.out / "learning_speed.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
