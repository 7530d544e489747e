"""``lvbd separate``: files, folders and globs → ``out/{track}/source{k}.{ext}``."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from .audio import CLIP_MODES
from .errors import LvbdError

log = logging.getLogger("lvbd.separate")
_WORKER: dict = {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="audio files, folders (searched recursively) or globs")
    parser.add_argument("-o", "--out", default="separated", help="output folder (default: %(default)s)")
    parser.add_argument("--model", default="default",
                        help="'default' (the shipped model) or a checkpoint .safetensors path")
    parser.add_argument("--segment", type=float, default=None,
                        help="segment length in seconds (default: twice the model's training segment)")
    parser.add_argument("--overlap", type=float, default=0.25, help="segment overlap fraction")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--clip-mode", default="rescale", choices=CLIP_MODES,
                        help="rescale all sources if the peak exceeds 1, clamp, or none (float wav)")
    parser.add_argument("--format", default="wav", choices=["wav", "flac"])
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="files separated in parallel")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or info lines")


def load_separator(model: str, device: str, segment: float | None, overlap: float):
    from .separate import Separator

    try:
        return Separator.load(model, device=device, segment=segment, overlap=overlap)
    except LvbdError as err:
        raise LvbdError(f"--model: {err}") from None


def track_dirs(paths: list[Path], out: Path) -> list[Path]:
    """One output folder per input; inputs with the same name get their parent's name added."""
    stems = [p.stem for p in paths]
    return [out / (s if stems.count(s) == 1 else f"{p.parent.name or 'root'}_{s}")
            for s, p in zip(stems, paths)]


def separate_one(sep, path: Path, track: Path, fmt: str, clip_mode: str, force: bool,
                 progress: bool) -> str:
    """Separate one file; return a one-line status. Raises LvbdError on failure."""
    targets = [track / f"source{k + 1}.{fmt}" for k in range(sep.n_sources)]
    if not force and any(t.exists() for t in targets):
        return f"skipped {path}: outputs exist in {track} (use --force to overwrite)"
    from . import audio

    if path.is_dir():
        raise LvbdError(f"no audio files in folder {path}")
    audio.check_input(path)
    head = audio.info(path)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=round(head.frames / head.samplerate, 1), unit="s", desc=path.name,
                   leave=False, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]")
    start = time.perf_counter()
    try:
        outputs, result = sep.separate_to_files(
            path, track, fmt=fmt, clip_mode=clip_mode,
            on_progress=(lambda n: bar.update(n / head.samplerate)) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    took = time.perf_counter() - start
    conf = result.confidence
    conf_txt = "" if conf is None else " confidence " + " ".join(f"{c:.2f}" for c in conf)
    return (f"{path} -> {track}/ ({len(outputs)} sources, {head.frames / head.samplerate:.1f} s "
            f"in {took:.1f} s, RTF {took / max(head.frames / head.samplerate, 1e-9):.3f}{conf_txt})")


def _init_worker(model, device, segment, overlap, threads):
    torch.set_num_threads(threads)
    _WORKER["sep"] = load_separator(model, device, segment, overlap)


def _work(job):
    path, track, fmt, clip_mode, force = job
    try:
        return True, separate_one(_WORKER["sep"], path, track, fmt, clip_mode, force, False)
    except LvbdError as err:
        return False, f"{path}: {err}"
    except OSError as err:
        return False, f"{path}: {err.strerror or err}"


def run(args: argparse.Namespace) -> int:
    from .cli import expand_inputs, show_progress

    if args.jobs < 1:
        raise LvbdError(f"--jobs must be >= 1, got {args.jobs}")
    paths = expand_inputs(args.files)
    if not paths:
        raise LvbdError("no input files found")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LvbdError(f"cannot create output folder {out}: {err.strerror}") from None
    jobs = [(p, t, args.format, args.clip_mode, args.force)
            for p, t in zip(paths, track_dirs(paths, out))]
    if args.jobs == 1 or len(jobs) == 1:
        sep = load_separator(args.model, args.device, args.segment, args.overlap)
        progress = show_progress(args.quiet)
        results = []
        for path, track, fmt, clip_mode, force in jobs:
            try:
                results.append((True, separate_one(sep, path, track, fmt, clip_mode, force,
                                                   progress)))
            except LvbdError as err:
                results.append((False, f"{path}: {err}"))
            except OSError as err:
                results.append((False, f"{path}: {err.strerror or err}"))
            _report(*results[-1], args.quiet)
    else:
        load_separator(args.model, args.device, args.segment, args.overlap)  # fail fast
        threads = max(1, torch.get_num_threads() // args.jobs)
        with ProcessPoolExecutor(args.jobs, initializer=_init_worker,
                                 initargs=(args.model, args.device, args.segment, args.overlap,
                                           threads)) as pool:
            results = []
            for res in pool.map(_work, jobs):
                results.append(res)
                _report(*res, args.quiet)
    failed = sum(1 for ok, _ in results if not ok)
    if failed:
        sys.stderr.write(f"lvbd: {failed} of {len(jobs)} files failed\n")
    return 1 if failed else 0


def _report(ok: bool, line: str, quiet: bool) -> None:
    if not ok:
        sys.stderr.write(f"lvbd: error: {line}\n")
    elif line.startswith("skipped"):
        log.warning(line)  # even with --quiet: the user must learn that nothing was written
    elif not quiet:
        log.info(line)
