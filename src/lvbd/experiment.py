"""``lvbd experiment GRID.yaml``: train and evaluate a grid of runs on the paper's claims (issue 13).

The grid (:mod:`lvbd.experiment_grid`) names runs, budgets (``small``: 2 CPU cores; ``full``: a
GPU) and sections: ``ood`` (test sets per model, Δ_OOD, paired Wilcoxon tests), ``overfit``
(fractions of the training speakers), ``perm`` (permutation losses at several K, time per step),
``memory`` (long-form chunked separation) and ``oracle`` (ceilings). The command, each step doing
only what is missing:

1. resolves every run's config (a bad key is a one-line error) and checks that the ``ood``
   models' parameter counts lie within ``param_tolerance`` of the reference model's;
2. trains each run as one ``lvbd train`` process (``train.threads`` from the budget, ``--jobs``
   side by side) in ``OUT/<run>/seed<k>/``: a run whose last checkpoint reached the budget is
   skipped, a shorter one is continued with ``--resume``, a checkpoint of another config is an
   error (the grid changed: use another ``--out``);
3. evaluates (``lvbd.evaluate.evaluate_set`` on the validation-chosen ``best.safetensors``, SI-SDRi
   and SDRi), runs the long-form tests (:mod:`lvbd.longform`) and times training steps; every
   result is cached with the fingerprint of its checkpoint and test set;
4. writes the report sections between ``<!-- experiment:GRID:SECTION -->`` markers of the results
   file (:mod:`lvbd.experiment_report`) and PNG plots beside it in ``plots/``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from .config import Config, config_from_dict, load_config
from .errors import LvbdError
from .experiment_grid import (BUDGETS, ORACLES, SECTIONS, GridError, Plan, Run, check_parameters,
                              make_plan, needed_runs, read_grid)
from .fileio import atomic_write

log = logging.getLogger(__name__)

EVAL_METRICS = ("si_sdr", "sdr")


# ------------------------------------------------------------------ training
def hardware() -> dict:
    """CPU model, cores and accelerator of this machine (recorded with every launch)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def run_state(folder: Path, cfg: Config) -> tuple[str, int]:
    """("new" | "resume" | "done", step of the last checkpoint). LvbdError when the checkpoint
    was made from another config than ``cfg`` (train.steps aside)."""
    from .checkpoint import read_header

    last = folder / "last.safetensors"
    if not last.exists():
        return "new", 0
    step, saved = read_header(last)
    saved = config_from_dict(saved).to_dict()  # keys added since (with their defaults) match
    want = cfg.to_dict()
    saved["train"]["steps"] = want["train"]["steps"]
    if saved != want:
        a, b = _flatten(saved), _flatten(want)
        diff = [k for k in b if a.get(k) != b[k]]
        raise LvbdError(f"{folder} holds a run of another config ({', '.join(diff[:4])} differ); "
                        f"the grid changed: choose another --out or remove that folder")
    return ("done" if step >= cfg.train.steps else "resume"), step


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        out.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict)
                   else {f"{prefix}{key}": value})
    return out


def train_command(plan: Plan, run: Run, resume: bool) -> list[str]:
    """The ``lvbd train`` command line of one run (fresh, or continued to the budget)."""
    folder = plan.folder(run)
    cmd = [sys.executable, "-m", "lvbd", "train", "--quiet"]
    if resume:
        return cmd + ["--resume", str(folder), "--set", f"train.steps={plan.settings['steps']}"]
    cmd += ["--config", str(run.config), "--run-dir", str(folder)]
    return cmd + [x for s in plan.overrides(run) for x in ("--set", s)]


def run_commands(commands: list[tuple[list[str], Path]], jobs: int, threads: int) -> None:
    """Run ``(command, folder)`` pairs, ``jobs`` at a time, output appended to folder/train.log."""
    env = dict(os.environ)
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    pending, running, failed = list(commands), [], []
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                cmd, folder = pending.pop(0)
                folder.mkdir(parents=True, exist_ok=True)
                handle = (folder / "train.log").open("a")
                log.info("training %s", folder)
                running.append((subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT,
                                                 env=env), folder, handle, time.monotonic()))
            for item in list(running):
                proc, folder, handle, start = item
                if proc.poll() is not None:
                    handle.close()
                    running.remove(item)
                    _record(folder, {"exit": proc.returncode,
                                     "wall_seconds": round(time.monotonic() - start, 1)})
                    if proc.returncode:
                        failed.append(f"{folder} (exit {proc.returncode}, see its train.log)")
            time.sleep(0.2)
    finally:
        for proc, _, handle, _ in running:
            proc.terminate()
            proc.wait()
            handle.close()
    if failed:
        raise LvbdError(f"training failed: {'; '.join(failed)}")


def _record(folder: Path, entry: dict) -> None:
    """Append a launch or an exit (with the time) to the run's ``launches.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = {"time": datetime.datetime.now().isoformat(timespec="seconds"), **entry}
    with (folder / "launches.jsonl").open("a") as fh:
        fh.write(json.dumps(entry) + "\n")


def train_runs(plan: Plan, runs: list[Run], jobs: int) -> list[Run]:
    """Train or continue every run not yet at the budget → the runs launched."""
    todo, launched = [], []
    for run in runs:
        folder = plan.folder(run)
        state, step = run_state(folder, plan.configs[run])
        if state == "done":
            continue
        cmd = train_command(plan, run, resume=state == "resume")
        launched.append(run)
        _record(folder, {"from_step": step, "command": cmd, "hardware": hardware(), "jobs": jobs,
                         "threads": plan.settings["threads"]})
        todo.append((cmd, folder))
    run_commands(todo, jobs, plan.settings["threads"])
    return launched


# ------------------------------------------------------------------ evaluation jobs (cached)
def fingerprint(*paths: Path, extra: str = "") -> str:
    parts = []
    for path in paths:
        st = path.stat()
        parts.append(f"{path.name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts + [extra])


def checkpoint_of(folder: Path) -> Path:
    """The validation-chosen checkpoint of a run (``best``, else ``last``)."""
    best = folder / "best.safetensors"
    return best if best.exists() else folder / "last.safetensors"


def _set_marker(set_dir: Path) -> Path:
    meta = set_dir / "metadata.csv"
    return meta if meta.exists() else set_dir


def is_cached(stamp: Path, expected: str) -> bool:
    """Whether ``stamp`` (a result JSON) was made from inputs with this fingerprint."""
    try:
        return json.loads(stamp.read_text()).get("fingerprint") == expected
    except (OSError, json.JSONDecodeError):
        return False


def _work(job: dict) -> str | None:
    """One evaluation or long-form job (in a worker process) → None, or the error."""
    import torch

    torch.set_num_threads(max(1, job["threads"]))
    try:
        if job["kind"] == "eval":
            from .evaluate import evaluate_set

            summary = evaluate_set(job["spec"], job["set_dir"], job["out_dir"], EVAL_METRICS,
                                   job["max_items"] or None)
            result = {"csv": summary["files"][0], "json": summary["files"][1]}
        else:
            from .longform import evaluate_long_form
            from .separate import Separator

            separator = Separator.load(job["spec"], device=job["device"])
            result = evaluate_long_form(separator, job["set_dir"], job["seconds"], job["chunk"],
                                        job["overlap"], job["n_mixtures"])
        Path(job["stamp"]).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(job["stamp"], json.dumps(dict(result, fingerprint=job["fingerprint"]),
                                              indent=1) + "\n")
        return None
    except LvbdError as err:
        return f"{job['spec']} on {job['set_dir']}: {err}"


def evaluation_jobs(plan: Plan, sections: list[str]) -> tuple[list[dict], list[str]]:
    """(jobs not cached yet, test sets missing) for the chosen sections."""
    s, st = plan.grid.sections, plan.settings
    wanted: list[tuple[str, Path, str, int]] = []  # (spec or run folder, out folder, set, K)
    for section, key in (("ood", "sets"), ("perm", "set")):
        if section in sections and section in s:
            names = s[section][key] if section == "ood" else [s[section][key]]
            for runs in plan.members[section].values():
                wanted += [(None, plan.folder(r), n, plan.configs[r].model.n_sources)
                           for r in runs for n in names]
    if "oracle" in sections and "oracle" in s:
        names = s["oracle"]["sets"] or s.get("ood", {}).get("sets", [])
        wanted += [(m, plan.out / "oracles" / m, n, K) for m in s["oracle"]["models"]
                   for n in names for K in s["oracle"]["n_sources"]]
    jobs, missing, threads = [], [], max(1, st["threads"])
    for spec, folder, name, K in dict.fromkeys(wanted):
        set_dir = plan.set_dir(name, K)
        if not set_dir.is_dir():
            missing.append(f"{name}/{K}spk")
            continue
        spec = spec or str(checkpoint_of(folder))
        marks = ([Path(spec)] if spec not in ORACLES else []) + [_set_marker(set_dir)]
        stamp = plan.eval_stamp(folder, name, K)
        fp = fingerprint(*marks, extra=f"{spec if spec in ORACLES else ''}:{st['eval_items']}")
        if not is_cached(stamp, fp):
            jobs.append({"kind": "eval", "spec": spec, "set_dir": str(set_dir),
                         "out_dir": str(stamp.parent), "max_items": st["eval_items"],
                         "stamp": str(stamp), "fingerprint": fp, "threads": threads})
    if "memory" in sections and "memory" in s:
        sec = s["memory"]
        for runs in plan.members["memory"].values():
            for run in runs:
                K = plan.configs[run].model.n_sources
                set_dir, out = plan.set_dir(sec["set"], K), plan.longform_path(run, sec["set"], K)
                if not set_dir.is_dir():
                    missing.append(f"{sec['set']}/{K}spk")
                    continue
                spec = str(checkpoint_of(plan.folder(run)))
                fp = fingerprint(Path(spec), _set_marker(set_dir), extra=json.dumps(
                    [sec["seconds"], sec["chunk"], sec["overlap"], st["long_mixtures"]]))
                if not is_cached(out, fp):
                    jobs.append({"kind": "longform", "spec": spec, "set_dir": str(set_dir),
                                 "stamp": str(out), "fingerprint": fp, "threads": threads,
                                 "device": plan.configs[run].train.device, "seconds": sec["seconds"],
                                 "chunk": sec["chunk"], "overlap": sec["overlap"],
                                 "n_mixtures": st["long_mixtures"]})
    return jobs, sorted(set(missing))


def run_evaluations(jobs: list[dict], n_workers: int, progress: bool) -> None:
    from .progress import run_jobs

    errors = [e for e in run_jobs(_work, jobs, n_workers, progress, "evaluations", unit="job",
                                  start_method="spawn") if e]
    if errors:
        raise LvbdError(f"{len(errors)} evaluation(s) failed; first: {errors[0]}")


# ------------------------------------------------------------------ time per step
def time_per_step(cfg: Config, steps: int = 3, warmup: int = 1) -> list[float]:
    """Seconds of ``steps`` training steps of ``cfg`` on random stems (batch and segment of its
    data config, ``train.threads`` threads, its device) after ``warmup`` untimed ones."""
    import torch

    from .models import build_model
    from .separate import resolve_device
    from .train import _LossModule, _step

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    wrapped = _LossModule(model)
    length = int(round(cfg.data.segment_seconds * cfg.model.sample_rate))
    refs = 0.1 * torch.randn(cfg.data.batch_size, cfg.model.n_sources, length, device=device)
    times = []
    for i in range(warmup + steps):
        tic = time.perf_counter()
        _step(wrapped, model, opt, refs, cfg, i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    return times


def run_timing(plan: Plan) -> None:
    """Time per step of every perm loss at every ``timing_sources`` K, cached in OUT/timing.json."""
    sec, path = plan.grid.sections["perm"], plan.out / "timing.json"
    cached = json.loads(path.read_text()) if path.exists() else {}
    base = plan.grid.runs[sec["base"]]
    for loss, extra in sec["losses"].items():
        for K in sec["timing_sources"]:
            cfg = load_config(base["config"], [*plan.settings["set"], *base["set"], *extra,
                                               f"model.n_sources={K}",
                                               f"train.threads={plan.settings['threads']}"])
            key, fp = f"{loss}-k{K}", f"{cfg.to_json()}|{plan.settings['timing_steps']}"
            if cached.get(key, {}).get("fingerprint") == fp:
                continue
            times = time_per_step(cfg, plan.settings["timing_steps"])
            cached[key] = {"fingerprint": fp, "seconds": times, "hardware": hardware()}
            log.info("time per step %s: %.3f s (median of %d)", key, sorted(times)[len(times) // 2],
                     len(times))
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(cached, indent=1) + "\n")


# ------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", metavar="GRID.yaml", help="the experiment grid "
                        "(e.g. configs/experiments/claims.yaml)")
    parser.add_argument("--budget", default="small", choices=BUDGETS,
                        help="small: 2 CPU cores; full: a GPU")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="run folders (default: runs/experiments/<grid name>-<budget>)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="trainings and evaluations side by side (default: the budget's)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None, metavar="SECTION",
                        help=f"only these sections ({', '.join(SECTIONS)}; default: all in the grid)")
    parser.add_argument("--report-only", action="store_true",
                        help="train and evaluate nothing; report what the run folders hold")
    parser.add_argument("--results", default="docs/results.md", metavar="FILE",
                        help="the results file whose marked sections are written; plots go to "
                             "its folder's plots/")


def run(args: argparse.Namespace) -> int:
    from .experiment_report import write_report
    from .progress import show_progress

    grid = read_grid(args.grid)
    sections = [s for s in (args.only or SECTIONS) if s in grid.sections]
    if args.only and not sections:
        raise GridError(f"--only {' '.join(args.only)}: grid {args.grid} has none of these sections")
    out = Path(args.out or Path("runs") / "experiments" / f"{grid.name}-{args.budget}")
    plan = make_plan(grid, args.budget, out)
    jobs = args.jobs if args.jobs is not None else plan.settings["jobs"]
    if jobs < 1:
        raise LvbdError(f"--jobs must be >= 1, got {jobs}")
    if "ood" in sections:
        check_parameters(plan)
    if not args.report_only:
        if not Path(grid.data_root, "manifest.csv").exists():
            raise LvbdError(f"no corpus at {grid.data_root} (build it: lvbd data build --out "
                            f"{grid.data_root}, or set data_root in the grid)")
        launched = train_runs(plan, needed_runs(plan, sections), jobs)
        log.info("trained %d run(s)", len(launched))
        todo, missing = evaluation_jobs(plan, sections)
        for name in missing:
            log.warning("test set %s not found under %s: left out", name, grid.test_root)
        run_evaluations(todo, jobs, show_progress(args.quiet))
        if "perm" in sections:
            run_timing(plan)
    command = f"lvbd experiment {args.grid} --budget {args.budget}" + (
        f" --out {args.out}" if args.out else "")
    for path in write_report(plan, sections, Path(args.results), command):
        log.info("wrote %s", path)
    return 0
