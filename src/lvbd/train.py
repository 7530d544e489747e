"""``lvbd train``: one explicit training loop (nanoGPT / open-unmix style).

Dynamic mixing on the training split, Adam, gradient clipping, LR halving on a validation
plateau, validation SI-SDRi on fixed mixtures, ``metrics.jsonl``, atomic safetensors checkpoints
(``last`` and ``best``) with optimizer and RNG state, ``--resume`` after a kill, and DDP when
started by ``torchrun`` (gloo on CPU, nccl on CUDA) with the same code.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, apply_overrides, load_config
from .errors import LvbdError
from .fileio import atomic_write
from .losses import pairwise_neg_si_sdr, pit_hungarian, si_sdr, total_loss
from .models import build_model
from .objective import loss_terms
from .progress import show_progress
from .separate import resolve_device

log = logging.getLogger(__name__)


class NonFiniteLoss(LvbdError):
    """The loss or its gradient became NaN/Inf; training stopped (train.on_nonfinite=stop)."""


class _LossModule(torch.nn.Module):
    """Routes ``forward`` to ``objective.loss_terms(model, ...)``: DDP sees the training computation."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mixture, references, loss_cfg, step, total_steps):
        return loss_terms(self.model, mixture, references, loss_cfg, step, total_steps)


def si_sdri(estimates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Mean SI-SDR improvement per example after Hungarian assignment → (B,)."""
    mixture = references.sum(1, keepdim=True).expand_as(references)  # (B, K, L)
    loss, _ = pit_hungarian(pairwise_neg_si_sdr(estimates, references))
    return -loss - si_sdr(mixture, references).mean(1)


@torch.no_grad()
def validate(model: torch.nn.Module, valid: list[torch.Tensor], batch_size: int,
             device: torch.device) -> float:
    model.eval()
    scores = []
    for i in range(0, len(valid), batch_size):
        refs = torch.stack(valid[i:i + batch_size]).to(device)  # (B, K, L)
        scores.append(si_sdri(model(refs.sum(1)).estimates, refs))
    model.train()
    return float(torch.cat(scores).mean())


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log rows newer than the checkpoint we resume from, so the curve continues cleanly.

    A row torn by a kill in the middle of a write is dropped too; the rewrite is atomic.
    """
    if path.exists():
        keep = []
        for row in path.read_text(errors="replace").splitlines():
            try:
                if json.loads(row).get("step", 0) <= step:
                    keep.append(row)
            except (json.JSONDecodeError, AttributeError):
                log.warning("%s: dropped a torn log row %r", path, row[:80])
        atomic_write(path, "".join(r + "\n" for r in keep))


def _remove_stale_temps(run_dir: Path) -> None:
    """Temp files of checkpoint writes that a kill interrupted (the targets are intact)."""
    for pattern in (".last.safetensors.*.tmp", ".best.safetensors.*.tmp", ".metrics.jsonl.*.tmp",
                    ".config.yaml.*.tmp"):
        for tmp in run_dir.glob(pattern):
            tmp.unlink(missing_ok=True)


class PlateauSchedule:
    """Learning rate × ``lr_factor`` after ``lr_patience`` validations without a new best score.

    ``best`` and ``bad`` (validations since the best) are saved in every checkpoint and restored on
    resume, so a resumed run halves the LR at the same step as an uninterrupted one.
    """

    def __init__(self, opt: torch.optim.Optimizer, patience: int, factor: float,
                 best: float = -math.inf, bad: int = 0):
        self.opt, self.patience, self.factor = opt, patience, factor
        self.best, self.bad = best, bad

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def update(self, score: float) -> bool:
        """Record a validation score; whether it is a new best."""
        if score > self.best:
            self.best, self.bad = score, 0
            return True
        self.bad += 1
        if self.bad >= self.patience:
            for group in self.opt.param_groups:
                group["lr"] *= self.factor
            self.bad = 0
        return False


class _Clock:
    """Wall-clock budget and the CPU minutes of the whole run (resumes included)."""

    def __init__(self, budget_minutes: float, cpu_minutes_before: float):
        self.budget_s = budget_minutes * 60.0
        self.start, self.cpu_start, self.cpu0 = time.monotonic(), time.process_time(), cpu_minutes_before

    def cpu_minutes(self) -> float:
        """CPU time of this process (all threads) over the whole run, resumes included."""
        return self.cpu0 + (time.process_time() - self.cpu_start) / 60.0

    def out_of_time(self, ddp: bool, device: torch.device) -> bool:
        out = self.budget_s > 0 and time.monotonic() - self.start >= self.budget_s
        if ddp and self.budget_s > 0:  # every rank stops at the same step
            flag = torch.tensor(float(out), device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            out = bool(flag.item())
        return out


def _start_distributed(cfg: Config) -> tuple[bool, int, int, torch.device]:
    """(ddp, rank, world, device): DDP when started by ``torchrun`` (gloo on CPU, nccl on CUDA)."""
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(cfg.train.device)
    if ddp:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    rank, world = (dist.get_rank(), dist.get_world_size()) if ddp else (0, 1)
    return ddp, rank, world, device


def _restore(run_dir: Path, cfg: Config, rank: int, device: torch.device, resume: bool,
             init: str | None) -> tuple[torch.nn.Module, torch.optim.Optimizer, int, dict]:
    """Model and optimizer, fresh, from ``init`` weights or resumed → (model, opt, step, extra)."""
    last, metrics_path = run_dir / "last.safetensors", run_dir / "metrics.jsonl"
    if resume and not last.exists():
        raise LvbdError(f"--resume: no checkpoint {last}")
    if not resume and last.exists():
        raise LvbdError(f"{run_dir} already holds a run; use --resume {run_dir} or a new --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _remove_stale_temps(run_dir)
    torch.manual_seed(cfg.train.seed + rank)
    model = build_model(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    step, extra = 0, {"best": -math.inf, "bad": 0, "cpu_minutes": 0.0}
    if resume:
        _, state, info = load_checkpoint(last)
        model.load_state_dict(state)
        opt.load_state_dict(info["optimizer"])
        if "rng_torch" in info:
            torch.set_rng_state(info["rng_torch"])
        step, extra = info["step"], dict(extra, **info["extra"])
        if rank == 0:
            _truncate_metrics(metrics_path, step)
        log.info("resumed %s at step %d (best valid SI-SDRi %.2f dB)", run_dir, step, extra["best"])
    elif init:
        _, state, _ = load_checkpoint(init)
        model.load_state_dict(state)
        log.info("initialised weights from %s", init)
    if rank == 0:
        if not resume:
            _truncate_metrics(metrics_path, 0)  # rows of a run killed before its 1st checkpoint
        atomic_write(run_dir / "config.yaml", json.dumps(cfg.to_dict(), indent=2))
    return model, opt, step, extra


def _data(cfg: Config, step: int, rank: int, world: int):
    """(training loader from ``step`` on, fixed validation items, fixed training items scored
    like them: ``train.train_eval_items`` mixtures of the training speakers, unaugmented)."""
    from .data.augment import polarity_phase
    from .data.datasets import DynamicMixDataset, FixedValidSet

    d, B = cfg.data, cfg.data.batch_size
    train_set = DynamicMixDataset(d.root, d.splits_train, cfg.model.n_sources, d.segment_seconds,
                                  cfg.model.sample_rate, cfg.train.seed,
                                  cfg.train.steps * B * world, d.engines, augment=d.augment,
                                  speaker_fraction=d.speaker_fraction,
                                  engine_shares=d.engine_shares,
                                  same_speaker_prob=d.same_speaker_prob,
                                  exclude_speakers=d.exclude_speakers)
    # validation keeps every speaker (held-out utterances, data.exclude_speakers included), so
    # runs with and without an exclusion are scored on one and the same set
    valid = list(FixedValidSet(d.root, d.valid_items, cfg.model.n_sources,
                               d.valid_segment_seconds, cfg.model.sample_rate,
                               cfg.train.seed + 10_000, d.engines,
                               augment=polarity_phase() if d.valid_polarity_phase else None))
    train_fixed = list(FixedValidSet(d.root, cfg.train.train_eval_items, cfg.model.n_sources,
                                     d.valid_segment_seconds, cfg.model.sample_rate,
                                     cfg.train.seed + 20_000, d.engines, split=d.splits_train,
                                     speaker_fraction=d.speaker_fraction,
                                     exclude_speakers=d.exclude_speakers)
                       ) if cfg.train.train_eval_items > 0 else []
    order = [(s * world + rank) * B + i for s in range(step, cfg.train.steps) for i in range(B)]
    loader = torch.utils.data.DataLoader(train_set, batch_size=B, sampler=order,
                                         num_workers=d.num_workers,  # own generator: the
                                         generator=torch.Generator().manual_seed(step))  # global RNG stays resumable
    return loader, valid, train_fixed


def _step(wrapped, model, opt, refs: torch.Tensor, cfg: Config, step: int) -> tuple[dict | None, float]:
    """One optimisation step → (logged values, or None when skipped; the total loss)."""
    est, terms = wrapped(refs.sum(1), refs, cfg.loss, step, cfg.train.steps)
    loss = total_loss(terms, cfg.loss, step)
    values = {k: float(v.detach()) for k, v in terms.items()}
    total = float(loss.detach())
    opt.zero_grad(set_to_none=True)
    grad_norm = math.nan
    if torch.isfinite(loss):
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad))
    if math.isfinite(grad_norm):
        opt.step()
        return dict(values, loss=total, grad_norm=grad_norm,
                    train_si_sdri=float(si_sdri(est.detach(), refs).mean())), total
    if cfg.train.on_nonfinite == "stop":
        raise NonFiniteLoss(f"non-finite loss or gradient at step {step}: {values}")
    log.warning("step %d: non-finite loss or gradient %s, step skipped", step, values)
    return None, total


def train(cfg: Config, run_dir: str | Path, resume: bool = False, init: str | None = None,
          progress: bool = False) -> Path:
    """Train ``cfg`` into ``run_dir`` (``last``/``best``.safetensors, metrics.jsonl)."""
    run_dir, tc = Path(run_dir), cfg.train
    ddp, rank, world, device = _start_distributed(cfg)
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    model, opt, step, extra = _restore(run_dir, cfg, rank, device, resume, init)
    schedule = PlateauSchedule(opt, tc.lr_patience, tc.lr_factor, extra["best"], extra["bad"])
    log.info("model %s: %.2f M parameters on %s (world %d)", cfg.model.arch,
             sum(p.numel() for p in model.parameters()) / 1e6, device, world)
    wrapped = _LossModule(model)
    if ddp:
        wrapped = torch.nn.parallel.DistributedDataParallel(wrapped, find_unused_parameters=True)
    loader, valid, train_fixed = _data(cfg, step, rank, world)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=tc.steps, initial=step, unit="step", dynamic_ncols=True)
    model.train()
    tic, window, skipped = time.perf_counter(), [], 0
    clock = _Clock(tc.budget_minutes, float(extra.get("cpu_minutes", 0.0)))
    for refs in loader:
        refs = refs.to(device)  # (B, K, L)
        values, loss = _step(wrapped, model, opt, refs, cfg, step)
        if values is None:
            skipped += 1
        else:
            window.append(values)
        step += 1
        out_of_time = clock.out_of_time(ddp, device)
        final = step == tc.steps or out_of_time
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.2f}", refresh=False)
        row = None
        if step % tc.log_every == 0 or final:
            row = {k: sum(w[k] for w in window) / len(window) for k in window[0]} if window else {}
            row.update(step=step, lr=schedule.lr, skipped=skipped,
                       sec_per_step=(time.perf_counter() - tic) / max(1, len(window)),
                       cpu_minutes=clock.cpu_minutes())
            tic, window = time.perf_counter(), []
        if step % tc.valid_every == 0 or final:
            score = validate(model, valid, cfg.data.batch_size, device)
            row = dict(row or {"step": step}, valid_si_sdri=score)
            if train_fixed:  # the generalisation gap: train_eval_si_sdri - valid_si_sdri
                row["train_eval_si_sdri"] = validate(model, train_fixed, cfg.data.batch_size, device)
            lr = schedule.lr
            if schedule.update(score) and rank == 0:
                save_checkpoint(run_dir / "best.safetensors", model, cfg, step,
                                extra={"valid_si_sdri": score, "cpu_minutes": clock.cpu_minutes()})
            if schedule.lr != lr:
                log.info("step %d: validation plateau, lr -> %.2e", step, schedule.lr)
        if row is not None and rank == 0:
            with (run_dir / "metrics.jsonl").open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            log.debug("%s", row)
        if rank == 0 and (step % tc.checkpoint_every == 0 or final):
            save_checkpoint(run_dir / "last.safetensors", model, cfg, step, opt,
                            extra={"best": schedule.best, "bad": schedule.bad,
                                   "cpu_minutes": clock.cpu_minutes()})
        if out_of_time:
            log.info("step %d: time budget of %.1f min reached", step, tc.budget_minutes)
            break
    if bar is not None:
        bar.close()
    if ddp:
        dist.destroy_process_group()
    return run_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--run-dir", default=None, help="output folder (default: runs/<config>)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint")
    parser.add_argument("--init", default=None, metavar="CHECKPOINT",
                        help="start from these weights (e.g. the shipped model), fresh optimizer")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (base: files merged, --set applied) and exit")


def run(args: argparse.Namespace) -> int:
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "last.safetensors").exists():
            raise LvbdError(f"--resume: no checkpoint in {run_dir}")
        try:
            cfg, _, _ = load_checkpoint(run_dir / "last.safetensors")
        except CheckpointError as err:
            best = run_dir / "best.safetensors"
            hint = f"; {best} is kept: start a new run with --init {best}" if best.exists() else ""
            raise CheckpointError(f"--resume: {err}{hint}") from None
        apply_overrides(cfg, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
        name = Path(args.config).stem if args.config else "default"
        run_dir = Path(args.run_dir or Path("runs") / name)
    if args.device:
        cfg.train.device = args.device
    if args.print_config:
        sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    if not Path(cfg.data.root, "manifest.csv").exists():
        raise LvbdError(f"no corpus at {cfg.data.root} (build it: lvbd data build --out "
                        f"{cfg.data.root}, or set data.root)")
    train(cfg, run_dir, resume=bool(args.resume), init=args.init,
          progress=show_progress(args.quiet))
    log.info("run finished: %s", run_dir)
    return 0
