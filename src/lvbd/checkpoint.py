"""Checkpoints: safetensors tensors + JSON metadata, written atomically, never unpickled.

Layout of one file: tensors ``model.<param>``, ``optim.<index>.<key>`` and ``rng.torch``; the
safetensors metadata holds ``format``, ``config`` (JSON), ``step`` and ``extra`` (JSON). A
shipped model is the same file without optimizer tensors, plus a sidecar ``.json`` config.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import Config, config_from_dict
from .errors import LvbdError
from .fileio import atomic_write

FORMAT = "lvbd-checkpoint-1"
UNSAFE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar"}


class CheckpointError(LvbdError):
    """A checkpoint is missing, unsafe, corrupt or of an unknown format."""


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: Config, step: int,
                    optimizer: torch.optim.Optimizer | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Save model (+ optimizer and RNG when given) atomically; return the path."""
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict[str, str] = {"format": FORMAT, "config": cfg.to_json(), "step": str(int(step)),
                            "extra": json.dumps(extra or {})}
    if optimizer is not None:
        opt_state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, state in opt_state["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        meta["optim_groups"] = json.dumps(opt_state["param_groups"])
        meta["optim_scalars"] = json.dumps(scalars)
        tensors["rng.torch"] = torch.get_rng_state()
    try:
        atomic_write(path, st_save(tensors, metadata=meta))
    except OSError as err:
        raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror or err}") from None
    return Path(path)


def load_checkpoint(path: str | Path) -> tuple[Config, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint → (config, model state_dict, info with step, extra, optimizer state)."""
    path = Path(path)
    if path.suffix.lower() in UNSAFE_SUFFIXES:
        raise CheckpointError(f"refusing to load {path}: pickle-based checkpoints ({path.suffix}) "
                              "can run code; lvbd loads only .safetensors")
    try:
        payload = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    try:
        tensors = st_load(payload)
        meta = _metadata(payload)
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors checkpoint (corrupt, truncated "
                              f"or a pickle; lvbd never unpickles): {str(err).splitlines()[0]}") \
            from None
    sidecar = path.with_suffix(".json")
    if "config" in meta:
        cfg_dict = json.loads(meta["config"])
    elif sidecar.exists():
        cfg_dict = json.loads(sidecar.read_text())["config"]
    else:
        raise CheckpointError(f"{path} holds no lvbd config (format {meta.get('format', '?')})")
    cfg = config_from_dict(cfg_dict)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if not state:
        raise CheckpointError(f"{path} holds no model weights")
    info: dict[str, Any] = {"step": int(meta.get("step", 0)),
                            "extra": json.loads(meta.get("extra", "{}"))}
    if "optim_groups" in meta:
        scalars = json.loads(meta.get("optim_scalars", "{}"))
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = value
        for idx, values in scalars.items():
            opt_state.setdefault(int(idx), {}).update(values)
        info["optimizer"] = {"state": dict(sorted(opt_state.items())), "param_groups": json.loads(meta["optim_groups"])}
    if "rng.torch" in tensors:
        info["rng_torch"] = tensors["rng.torch"]
    return cfg, state, info


def read_header(path: str | Path) -> tuple[int, dict[str, Any]]:
    """(step, config dict) of a checkpoint from its header alone (``safe_open`` reads no tensor)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        return int(meta["step"]), json.loads(meta["config"])
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from None
    except (SafetensorError, KeyError, ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is not a valid lvbd checkpoint (corrupt or truncated "
                              f"header)") from None


def _metadata(payload: bytes) -> dict[str, str]:
    if len(payload) < 8:
        raise ValueError("file too short")
    size = int.from_bytes(payload[:8], "little")
    if size <= 0 or 8 + size > len(payload):
        raise ValueError("header length out of range")
    header = json.loads(payload[8:8 + size].decode("utf-8"))
    return header.get("__metadata__", {}) or {}


def load_model(path: str | Path, device: str | torch.device = "cpu",
               overrides: list[str] | None = None):
    """Build the model a checkpoint describes and load its weights (eval mode); ``overrides``
    (``section.key=value``) change its config first, e.g. inference settings."""
    from .config import apply_overrides
    from .models import build_model

    cfg, state, info = load_checkpoint(path)
    if overrides:
        apply_overrides(cfg, overrides)
    model = build_model(cfg.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        changed = f" with {', '.join(overrides)}" if overrides else ""
        raise CheckpointError(f"{path}: weights do not match its config{changed}: "
                              f"{str(err).splitlines()[0]}") from None
    model.segment_seconds = inference_segment(cfg)
    return model.to(device).eval(), cfg, info


def average_models(paths: list[str | Path], overrides: list[str] | None = None):
    """The model whose weights are the mean of the checkpoints ``paths`` (same model config; e.g.
    the last checkpoints of one run: a cheap ensemble at no inference cost) → (model, cfg of the
    last, info of the last with ``averaged_steps``). Float tensors are averaged in float64; any
    other tensor must be equal in all."""
    if not paths:
        raise CheckpointError("no checkpoint to average")
    model, cfg, info = load_model(paths[-1], overrides=overrides)
    loaded = [load_checkpoint(path) for path in paths]
    for path, (other, _, _) in zip(paths, loaded):
        if other.model != loaded[-1][0].model:
            raise CheckpointError(f"cannot average {path} with {paths[-1]}: other model config")
    states = [state for _, state, _ in loaded]
    mean = {}
    for key, value in states[-1].items():
        if value.is_floating_point():
            mean[key] = (sum(s[key].double() for s in states) / len(states)).to(value.dtype)
        elif all(torch.equal(s[key], value) for s in states):
            mean[key] = value
        else:
            raise CheckpointError(f"cannot average {key}: a non-float tensor that differs")
    model.load_state_dict(mean)
    info = {**info, "extra": {**info["extra"], "averaged_steps": [i["step"] for _, _, i in loaded]}}
    return model, cfg, info


def inference_segment(cfg: Config) -> float:
    """Default inference segment of a model trained with ``cfg``: four times its training segment
    (8 s for the shipped model), with 1 s of overlap (``separate.default_overlap``). On validation
    long mixtures quality is flat from 4 to 16 s and 8 s costs 0.79x the model time of 4 s
    (docs/design.md "Inference on long files", ``benchmarks/segment_choice.py``)."""
    return 4 * cfg.data.segment_seconds
