"""``lvbd separate``: files, folders and globs → ``OUT/{model}/{track}/source{k}.{ext}``.

Output folders (demucs layout, README "Where the outputs go"):

- ``model`` is ``default`` (the shipped model) or the checkpoint's file name without suffix;
- ``track`` is the input's path below the argument that found it, without its extension: the
  file name for a file argument (``a/x/mix.wav`` → ``mix``), the path below a folder argument
  (``in/`` → ``x/mix``), the path below a glob's fixed folders (``'in/*/*.wav'`` → ``x/mix``);
- inputs of one call that would share a folder keep their extension (``eq.ogg``, ``eq.mp3``);
  if that still clashes, leading folders of their paths are added until the names differ
  (``a/x/mix.wav``, ``b/x/mix.wav``);
- each track folder records the input and model that filled it (``.lvbd.json``). A folder that
  holds another input's outputs (or outputs it has no record of) is never written to, not even
  with ``--force``: the input moves on to its next name as above (``x`` → ``x.wav``).
- An input is skipped only when its folder already holds its outputs from the same model;
  ``--force`` re-separates it. Skips are counted in the summary line.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import LvbdError
from .fileio import atomic_write, sha256_file
from .inputs import find_inputs
from .progress import show_progress

log = logging.getLogger("lvbd.separate")
_WORKER: dict = {}
RECORD = ".lvbd.json"
CLIP_MODES = ("rescale", "clamp", "none")  # as lvbd.audio.CLIP_MODES (not imported: fast --help)
BITS = {"int16": "PCM_16", "int24": "PCM_24", "float32": "FLOAT"}  # the --int16.. flags
EPILOG = """\
outputs: OUT/MODEL/TRACK/source1.wav, source2.wav, ...
  MODEL  'default', or the checkpoint's file name without suffix
  TRACK  the input's path below the argument that found it, without extension:
         song.mp3 -> song; folder in/ with in/x/mix.wav -> x/mix
  Inputs of one call that would share a TRACK keep their extension (eq.ogg, eq.mp3),
  then leading folders (a/x/mix.wav, b/x/mix.wav). A folder holding another input's
  outputs is never touched: the input takes its next name. An input whose outputs
  from the same model exist is skipped (counted in the summary) unless --force.

examples:
  lvbd separate talk.wav                       # separated/default/talk/source{1,2}.wav
  lvbd separate in/ -o out -n runs/x/best.safetensors --flac --int24
  lvbd separate 'calls/**/*.ogg' -j 2 -q
  arecord -f S16_LE -r 8000 | lvbd separate --stream --segment 0.5 -   # live, 0.5 s latency
  arecord -f S16_LE -r 8000 | lvbd separate --stream --low-latency -   # live, 99.9 ms latency"""
_OUTPUT = re.compile(r"^source\d+\.\w+$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="audio files (any format soundfile reads: wav, flac, ogg, mp3, ...), "
                             "folders (searched recursively) or quoted globs like 'in/**/*.wav'")
    parser.add_argument("-o", "--out", default="separated", metavar="DIR",
                        help="outputs go to DIR/MODEL/TRACK/source1.wav, source2.wav, ... "
                             "(default: %(default)s)")
    parser.add_argument("-n", "--name", "--model", dest="model", default="default",
                        metavar="NAME|PATH",
                        help="'default' (the shipped 2-talker model; the default) or a "
                             ".safetensors checkpoint; its file name without suffix is the "
                             "MODEL folder")
    parser.add_argument("-d", "--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the model runs; auto: a CUDA GPU when there is one, else "
                             "the CPU")
    parser.add_argument("--engine", default="auto", choices=["auto", "torch", "onnxruntime"],
                        help="what runs the model; auto: onnxruntime for the shipped model (or an "
                             ".onnx file) on the CPU, which starts without loading torch; torch "
                             "for checkpoints, a GPU, --flip, and pieces without overlap or "
                             "context (docs/streaming.md)")
    parser.add_argument("--segment", type=float, default=None, metavar="SECONDS",
                        help="long files are separated in pieces of this length (default: "
                             "the model's own, 8 s for the shipped model)")
    parser.add_argument("--overlap", type=float, default=None, metavar="FRACTION",
                        help="how much neighbouring pieces overlap, in [0, 1) (default: 1 s, "
                             "at most 0.25)")
    parser.add_argument("--context", type=float, default=None, metavar="SECONDS",
                        help="seconds of past input the model also sees before each piece; it "
                             "adds compute, not latency (default: 0)")
    parser.add_argument("--low-latency", action="store_true",
                        help="pieces of 0.1 s without overlap, each seen with 2 s of past "
                             "input: with --stream, 99.9 ms latency at the model's rate "
                             "(explicit --segment/--overlap/--context win; docs/streaming.md)")
    parser.add_argument("--flip", action="store_true",
                        help="also separate the negated input and average the two: the output "
                             "no longer depends on the input's polarity; twice the compute. "
                             "Outputs go to DIR/MODEL+flip/")
    parser.add_argument("--clip-mode", default="rescale", choices=CLIP_MODES,
                        help="outputs that would exceed full scale: rescale all sources of the "
                             "file together, clamp each sample, or none (writes float WAV)")
    output = parser.add_argument_group(
        "output file format", "By default outputs keep the input's sample format where the "
        "output format\ncan hold it (24-bit in -> 24-bit out; float -> float WAV or 24-bit "
        "FLAC), else 16-bit.")
    fmt = output.add_mutually_exclusive_group()
    fmt.add_argument("--format", default="wav", choices=["wav", "flac", "mp3"],
                     help="output file format")
    fmt.add_argument("--flac", dest="format", action="store_const", const="flac",
                     help="same as --format flac")
    fmt.add_argument("--mp3", dest="format", action="store_const", const="mp3",
                     help="same as --format mp3 (needs libsndfile >= 1.1)")
    bits = output.add_mutually_exclusive_group()
    bits.add_argument("--int16", dest="bits", action="store_const", const="PCM_16",
                      help="write 16-bit integer samples")
    bits.add_argument("--int24", dest="bits", action="store_const", const="PCM_24",
                      help="write 24-bit integer samples")
    bits.add_argument("--float32", dest="bits", action="store_const", const="FLOAT",
                      help="write 32-bit float samples (WAV only)")
    parser.add_argument("--force", action="store_true",
                        help="separate again inputs whose outputs (same input, same model) exist")
    parser.add_argument("-j", "--jobs", type=int, default=1,
                        help="files separated in parallel (one process each)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="show only warnings and errors; no progress bars")
    parser.add_argument("--stream", action="store_true",
                        help="read each input block by block as a live input (0.1 s blocks, "
                             "Separator.stream: latency = one --segment); FILE '-' reads PCM "
                             "WAV from stdin into OUT/MODEL/stdin/ (docs/streaming.md)")


# --------------------------------------------------------------------------- output folders
@dataclass
class Job:
    path: Path           # the input
    track: Path          # OUT/MODEL/TRACK
    state: str           # "free" or "ours" (outputs of this input and model may exist there)


def model_identity(spec: str) -> tuple[str, Path | None, str]:
    """``--model`` → (folder name, checkpoint path or None if missing, sha256 prefix)."""
    from .separate import pretrained_path

    path = pretrained_path() if spec == "default" else Path(spec)
    if not path.is_file():
        return Path(spec).stem, None, ""
    return ("default" if spec == "default" else path.stem), path, sha256_file(path)[:16]


def _candidates(path: Path, rel: Path) -> list[Path]:
    """Track names for one input, in order of preference (see the module docstring)."""
    names = [rel.with_suffix("") if rel.suffix else rel, rel]
    parts = path.resolve().parts[1:]  # without the root
    names += [Path(*parts[-n:]) for n in range(len(rel.parts) + 1, len(parts) + 1)]
    unique: list[Path] = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return unique


def _within_call(candidates: list[list[Path]]) -> list[int]:
    """Per input the first level at which no two inputs of the call share a name."""
    level = [0] * len(candidates)
    while True:
        names: dict[Path, list[int]] = {}
        for i, cands in enumerate(candidates):
            names.setdefault(cands[level[i]], []).append(i)
        clashes = [group for group in names.values() if len(group) > 1]
        if not clashes:
            return level
        for group in clashes:
            for i in group:
                level[i] = min(level[i] + 1, len(candidates[i]) - 1)


def _read_record(track: Path) -> dict | None:
    try:
        return json.loads((track / RECORD).read_text())
    except (OSError, ValueError):
        return None


def _folder_state(track: Path, input_path: Path, model_sha: str) -> str:
    """``free``, ``ours``, ``other-model`` (same input, another model of this name) or ``taken``."""
    if not track.exists():
        return "free"
    if not track.is_dir():
        return "taken"
    record = _read_record(track)
    if record is None:
        try:
            outputs = [p for p in track.iterdir() if _OUTPUT.match(p.name)]
        except OSError:
            return "taken"
        return "taken" if outputs else "free"
    if record.get("input") != str(input_path.resolve()):
        return "taken"
    return "ours" if record.get("model_sha256") == model_sha else "other-model"


def plan_jobs(inputs: list[tuple[Path, Path]], model_dir: Path, model_sha: str,
              force: bool) -> list[Job | str]:
    """One output folder per input (a :class:`Job`), or an error line for that input."""
    candidates = [_candidates(path, rel) for path, rel in inputs]
    levels = _within_call(candidates)
    claimed: set[Path] = set()
    jobs: list[Job | str] = []
    for (path, _), cands, level in zip(inputs, candidates, levels):
        chosen = None
        for name in cands:  # a folder that already holds this input's outputs, at any level
            if name in claimed:
                continue
            state = _folder_state(model_dir / name, path, model_sha)
            if state == "ours" or (state == "other-model" and force):
                chosen = Job(path, model_dir / name, "ours")
                break
            if state == "other-model":
                record = _read_record(model_dir / name)
                chosen = (f"{model_dir / name} holds outputs of this input from another model "
                          f"also named '{model_dir.name}' ({record.get('model_file')}); use "
                          f"another -o, or --force to replace them")
                break
        if chosen is None:
            for name in cands[level:]:
                if name not in claimed and _folder_state(model_dir / name, path,
                                                         model_sha) == "free":
                    chosen = Job(path, model_dir / name, "free")
                    break
        if chosen is None:
            chosen = f"{path}: every output folder name for it is taken in {model_dir}"
        if isinstance(chosen, Job):
            claimed.add(chosen.track.relative_to(model_dir))
        jobs.append(chosen)
    return jobs


def _check_out(out: Path) -> None:
    """Fail in one line, before any work, if ``out`` cannot be created; create nothing."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LvbdError(f"cannot create output folder {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LvbdError(f"cannot create output folder {out}: Permission denied")


def _missing_dirs(tracks: list[Path]) -> list[Path]:
    """Folders above each track that do not exist yet, up to the first existing one (``-o``
    may name folders above OUT that do not exist either), deepest first."""
    missing: set[Path] = set()
    for track in tracks:
        for folder in [track.parent, *track.parent.parents]:
            if folder.exists():
                break
            missing.add(folder)
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()  # only if empty: never removes anything but our own folders
        except OSError:
            pass


def _write_record(track: Path, path: Path, model: dict) -> None:
    record = {"input": str(path.resolve()), **model}
    try:
        atomic_write(track / RECORD, json.dumps(record, indent=1) + "\n")
    except OSError as err:
        log.warning("could not record the input of %s (%s): a later call will not recognise "
                    "these outputs as its own", track, err.strerror or err)


# --------------------------------------------------------------------------- separating
def chunking(args: argparse.Namespace) -> tuple[float | None, float | None, float]:
    """(segment, overlap, context) from the flags: ``--low-latency`` fills what is not given;
    LvbdError naming the flag on a bad value."""
    from .separate import LOW_LATENCY, context_length, segment_lengths

    given = {"segment": args.segment, "overlap": args.overlap, "context": args.context}
    if getattr(args, "low_latency", False):
        given = {k: LOW_LATENCY[k] if v is None else v for k, v in given.items()}
    segment, overlap, context = given["segment"], given["overlap"], given["context"] or 0.0
    checks = (("--segment", lambda: segment is None or segment_lengths(1, 1, segment, 0.0)),
              ("--overlap", lambda: overlap is None or segment_lengths(1, 1, 1.0, overlap)),
              ("--context", lambda: context_length(1, context)))
    for flag, check in checks:
        try:
            check()
        except LvbdError as err:
            raise LvbdError(f"{flag}: {err}") from None
    return segment, overlap, context


def load_separator(model: str, device: str, segment: float | None, overlap: float | None,
                   context: float = 0.0, flip: bool = False, engine: str = "auto",
                   threads: int | None = None):
    """The separator that the flags ask for; ``threads`` (the onnxruntime engine's; torch's are
    set by the caller). LvbdError naming the flag."""
    from .runtime import check_settings
    from .separate import Separator, choose_engine, resolve_device

    engine = choose_engine(engine, model, device, flip, overlap, context)
    if engine == "onnxruntime":
        try:
            check_settings(device, flip, overlap, context)
        except LvbdError as err:
            raise LvbdError(f"--engine onnxruntime: {err}") from None
    else:
        try:
            device = resolve_device(device)
        except LvbdError as err:
            raise LvbdError(f"--device: {err}") from None
    try:
        return Separator.load(model, device=device, engine=engine, threads=threads,
                              segment=segment, overlap=overlap, context=context, flip=flip)
    except LvbdError as err:
        raise LvbdError(f"--model: {err}") from None


def separate_one(sep, job: Job, fmt: str, clip_mode: str, force: bool, bits: str | None,
                 model: dict, stream: bool, progress: bool) -> tuple[str, str]:
    """Separate one file → (status, one line): status ``separated`` or ``skipped``.

    Raises LvbdError on failure.
    """
    path, track = job.path, job.track
    targets = [track / f"source{k + 1}.{fmt}" for k in range(sep.n_sources)]
    if job.state == "ours" and not force and any(t.exists() for t in targets):
        return "skipped", f"skipped {path}: outputs exist in {track} (use --force to overwrite)"
    if stream:
        return _stream_one(sep, job, fmt, clip_mode, bits, model)
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
            path, track, fmt=fmt, clip_mode=clip_mode, subtype=bits,
            on_progress=(lambda n: bar.update(n / head.samplerate)) if bar else None)
    finally:
        if bar is not None:
            bar.close()
    _write_record(track, path, model)
    took = time.perf_counter() - start
    # no confidence here: the posterior confidence does not predict per-source quality
    # (Spearman rho -0.03 vs SI-SDR on ood-real, -0.18 on id; MODEL_CARD.md), so printing it
    # would mislead; Separator.separate(..., return_confidence=True) still returns it.
    return "separated", (
        f"{path} -> {track}/ ({len(outputs)} sources, {head.frames / head.samplerate:.1f} s "
        f"in {took:.1f} s, RTF {took / max(head.frames / head.samplerate, 1e-9):.3f})")


def _stream_one(sep, job: Job, fmt: str, clip_mode: str, bits: str | None,
                model: dict) -> tuple[str, str]:
    """``--stream``: the input (a file, or ``-`` for WAV on stdin) through ``Separator.stream``."""
    from .stream import SoundFileBlocks, WavPipeReader, stream_to_files

    stdin = str(job.path) == "-"
    if stdin:
        reader = WavPipeReader(sys.stdin.buffer)
    else:
        if job.path.is_dir():
            raise LvbdError(f"no audio files in folder {job.path}")
        reader = SoundFileBlocks(job.path)
    start = time.perf_counter()
    try:
        live = sep.stream(sample_rate=reader.sample_rate, channels=reader.channels)
        outputs, result = stream_to_files(live, reader, job.track, fmt=fmt, clip_mode=clip_mode,
                                          subtype=bits)
    finally:
        if not stdin:
            reader.close()
    if not stdin:
        _write_record(job.track, job.path, model)
    took = time.perf_counter() - start
    seconds = live.received / reader.sample_rate
    return "separated", (
        f"{'stdin' if stdin else job.path} -> {job.track}/ ({len(outputs)} sources, streamed "
        f"{seconds:.1f} s in {took:.1f} s, RTF {took / max(seconds, 1e-9):.3f}, latency "
        f"{live.latency_seconds * 1000:.1f} ms)")


def _init_worker(model, device, settings, threads):
    sep = load_separator(model, device, *settings, threads=threads)
    if sep.engine == "torch":
        import torch

        torch.set_num_threads(threads)
    _WORKER["sep"] = sep


def _attempt(sep, job: Job, options: tuple, progress: bool) -> tuple[str, str]:
    try:
        return separate_one(sep, job, *options, progress)
    except LvbdError as err:
        return "failed", f"{job.path}: {err}"
    except OSError as err:
        return "failed", f"{job.path}: {err.strerror or err}"


def _work(item):
    job, options = item
    return _attempt(_WORKER["sep"], job, options, False)


def run(args: argparse.Namespace) -> int:

    if args.jobs < 1:
        raise LvbdError(f"--jobs must be >= 1, got {args.jobs}")
    from . import audio

    try:
        audio.output_subtype(args.format, None, args.clip_mode, args.bits)
    except LvbdError as err:
        flags = f"--{args.format}" + (f" --{_flag(args.bits)}" if args.bits else "")
        raise LvbdError(f"{flags}: {err}") from None
    stream = getattr(args, "stream", False)
    stdin = [f for f in args.files if f == "-"]
    if stdin and not stream:
        raise LvbdError("FILE '-' (stdin) needs --stream")
    if len(stdin) > 1:
        raise LvbdError("'-' (stdin) can be given once")
    inputs = find_inputs([f for f in args.files if f != "-"]) if len(stdin) < len(args.files) \
        else []
    if not inputs and not stdin:
        raise LvbdError("no input files given")
    out = Path(args.out)
    _check_out(out)
    name, model_path, model_sha = model_identity(args.model)
    flip = getattr(args, "flip", False)
    # load_separator's segment, overlap, context, flip, engine
    settings = (*chunking(args), flip, getattr(args, "engine", "auto"))
    if flip:
        name += "+flip"  # other outputs than the plain model's: their own folder
    if model_path is None:
        load_separator(args.model, args.device, *settings)  # the error
    model = {"model": name, "model_file": str(model_path.resolve()), "model_sha256": model_sha}
    planned = plan_jobs(inputs, out / name, model_sha, args.force)
    if stdin:
        planned.append(_stdin_job(out / name, model_sha, args.force))
    jobs = [j for j in planned if isinstance(j, Job)]
    created = _missing_dirs([j.track for j in jobs])
    options = (args.format, args.clip_mode, args.force, args.bits, model, stream)
    quiet = getattr(args, "quiet", False)
    results: list[tuple[str, str]] = []
    try:
        for item in planned:
            if not isinstance(item, Job):
                results.append(("failed", item))
                _report(*results[-1], quiet)
        if args.jobs == 1 or len(jobs) <= 1 or stream:  # --stream: one at a time (stdin)
            sep = load_separator(args.model, args.device, *settings) if jobs else None
            progress = show_progress(quiet)
            for job in jobs:
                results.append(_attempt(sep, job, options, progress))
                _report(*results[-1], quiet)
        else:
            from concurrent.futures import ProcessPoolExecutor

            load_separator(args.model, args.device, *settings)  # fail fast
            threads = max(1, len(os.sched_getaffinity(0)) // args.jobs)
            with ProcessPoolExecutor(args.jobs, initializer=_init_worker,
                                     initargs=(args.model, args.device, settings, threads)) as pool:
                for res in pool.map(_work, [(job, options) for job in jobs]):
                    results.append(res)
                    _report(*res, quiet)
    finally:
        _remove_empty(created)  # a failed (or interrupted) run leaves no empty folder
    counts = {status: sum(1 for s, _ in results if s == status)
              for status in ("separated", "skipped", "failed")}
    if not quiet or counts["skipped"] or counts["failed"]:
        sys.stderr.write(f"lvbd: {len(results)} files: {counts['separated']} separated, "
                         f"{counts['skipped']} skipped, "
                         f"{counts['failed']} failed\n")
    return 1 if counts["failed"] else 0


def _stdin_job(model_dir: Path, model_sha: str, force: bool) -> Job | str:
    """``-``: outputs go to MODEL/stdin/, replaced only with ``--force`` (the input is unknown)."""
    track = model_dir / "stdin"
    if track.exists() and not force and (not track.is_dir() or any(
            _OUTPUT.match(p.name) for p in track.iterdir())):
        return f"-: {track} holds outputs already; use --force to replace them"
    return Job(Path("-"), track, "free")


def _flag(subtype: str | None) -> str:
    return next(k for k, v in BITS.items() if v == subtype)


def _report(status: str, line: str, quiet: bool) -> None:
    if status == "failed":
        sys.stderr.write(f"lvbd: error: {line}\n")
    elif status == "skipped":
        log.warning(line)  # even with --quiet: the user must learn that nothing was written
    elif not quiet:
        log.info(line)
