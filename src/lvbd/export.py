"""``lvbd export CKPT OUT``: a training checkpoint → a shippable model (weights + JSON config);
``lvbd export --format onnx CKPT OUT.onnx``: → an ONNX graph (:mod:`lvbd.export_onnx`).

The model file holds only the weights and the config (no optimizer, no RNG); the sidecar
``OUT.json`` repeats the config with provenance (source checkpoint, step, validation score)
for people and tools that read JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .checkpoint import average_models, load_model, save_checkpoint
from .errors import LvbdError
from .fileio import atomic_write, sha256_file

log = logging.getLogger(__name__)


def export_model(checkpoint: str | Path | list, out: str | Path, note: str = "",
                 overrides: list[str] | None = None) -> Path:
    """Write ``out.safetensors`` and ``out.json``; return the safetensors path.

    ``checkpoint``: one path, or a list of paths whose weights are averaged
    (:func:`lvbd.checkpoint.average_models`; the config and step are the last one's).
    ``overrides`` (``section.key=value``) change settings that leave the weights as they are, e.g.
    ``model.memory_warm_start=false`` or ``model.iva_iters_test=2``; one that changes a weight's
    shape is an error."""
    paths = [Path(p) for p in checkpoint] if isinstance(checkpoint, (list, tuple)) else [Path(checkpoint)]
    out = Path(out).with_suffix("")
    if not out.parent.is_dir():
        raise LvbdError(f"output folder {out.parent} does not exist")
    if len(paths) == 1:
        model, cfg, info = load_model(paths[0], overrides=overrides)
    else:
        model, cfg, info = average_models(paths, overrides=overrides)
    source = paths[0].name if len(paths) == 1 else [p.name for p in paths]
    provenance = {"source": source, "step": info["step"], **info["extra"],
                  "note": note, **({"overrides": list(overrides)} if overrides else {})}
    path = save_checkpoint(out.with_suffix(".safetensors"), model, cfg, info["step"],
                           extra=provenance)
    sidecar = {"config": cfg.to_dict(), "provenance": provenance,
               "parameters": sum(p.numel() for p in model.parameters())}
    atomic_write(out.with_suffix(".json"), json.dumps(sidecar, indent=2) + "\n")
    return path


def export_onnx_file(checkpoint: str | Path, out: str | Path) -> Path:
    """``checkpoint`` (or ``default``, the shipped model) → ONNX graph ``out`` (``.onnx`` added
    when missing); see :mod:`lvbd.export_onnx`."""
    from .export_onnx import export_onnx
    from .separate import pretrained_path

    source = pretrained_path() if str(checkpoint) == "default" else Path(checkpoint)
    model, _, _ = load_model(source)
    out = Path(out)
    return export_onnx(model, out if out.suffix == ".onnx" else out.with_name(out.name + ".onnx"),
                       weights_sha256=sha256_file(source))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="+",
                        help="a training checkpoint (.safetensors); with --format onnx also "
                             "'default' (the shipped model); several: their weights are averaged "
                             "(e.g. the last checkpoints of one run; same model config)")
    parser.add_argument("out", help="output path without suffix, e.g. models/mine (onnx: "
                                    "OUT.onnx)")
    parser.add_argument("--note", default="", help="free text stored in the provenance")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="change a setting that keeps the weights, e.g. "
                             "model.memory_warm_start=false (repeatable)")
    parser.add_argument("--format", default="safetensors", choices=["safetensors", "onnx"],
                        help="safetensors: weights + JSON config for lvbd; onnx: one graph "
                             "mixture (B, L) -> estimates (B, K, L) (and confidence, latent "
                             "covariance) for onnxruntime, which 'lvbd separate -n OUT.onnx' "
                             "runs (pip install 'lvbd[onnx]'; docs/streaming.md)")


def run(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        if len(args.checkpoint) > 1:
            raise LvbdError("--format onnx: one checkpoint (export an averaged model first)")
        path = export_onnx_file(args.checkpoint[0], args.out)
        log.info("wrote %s", path)
        return 0
    path = export_model(args.checkpoint, args.out, args.note, args.overrides)
    log.info("wrote %s and %s", path, path.with_suffix(".json"))
    return 0
