"""Dataclass configs (model, loss, data, training), YAML loading and ``--set`` overrides.

YAML is read with ``yaml.safe_load``; unknown keys and values of the wrong type are rejected
with the key named (``ConfigError``), so a typo never passes silently. A config file may derive
from another with ``base: other.yaml`` (a path relative to its own folder): the base is read
first (recursively) and the file's own keys replace the base's, section by section, so an
ablation states only what differs. ``lvbd train --print-config`` shows the resolved result.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import LvbdError


class ConfigError(LvbdError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


@dataclass
class ModelConfig:
    """The separator. Shapes: N filters, M latent channels, D block size (see ``lvbd`` legend)."""

    arch: str = "lvbd"                 # lvbd | convtasnet
    n_sources: int = 2                 # K
    sample_rate: int = 8000
    frontend: str = "conv"             # conv (learned linear filterbank) | stft
    n_filters: int = 256               # N
    kernel_size: int = 16
    stride: int = 8
    n_latent_channels: int = 4         # M (M > K: over-determined; M = K: determined ablation)
    block_size: int = 64               # D
    bottleneck: int = 128
    hidden: int = 256
    lifting: str = "tcn"               # tcn (Conv-TasNet TCN) | uconv (SuDoRM-RF U-ConvBlocks); also the
                                       # Conv-TasNet baseline's mask network
    n_blocks: int = 8                  # tcn: blocks per repeat; uconv: number of U-ConvBlocks
    n_repeats: int = 2                 # tcn: repeats (uconv: unused)
    uconv_depth: int = 4               # uconv: stride-2 downsamplings per U-ConvBlock (tcn: unused)
    demixer: str = "iva"               # iva (unrolled AuxIVA-IP/OverIVA) | iss | predicted
    init: str = "identity"             # identity | predicted (W0 from a small network)
    source_model: str = "laplace"      # laplace | gauss (time-varying Gaussian)
    iva_iters_train: int = 2
    iva_iters_test: int = 8
    variational: bool = True           # False: deterministic ablation (no sampling, no KL)
    memory: bool = True
    memory_alpha: float = 0.5          # EMA factor of the memory slots
    memory_chunks: int = 1             # training: split each segment into this many chunks
    memory_tau: float = 0.1            # Sinkhorn temperature of the memory alignment
    memory_warm_start: bool = True     # the memory's last W starts the next chunk's demixer (else cfg.init)
    decoder_hidden: int = 256
    decoder: str = "synth"             # synth (G synthesises coefficients from y_k) | mask (G(y_k) -> softmax
                                       # masks over sources on the mixture's coefficients; docs/design.md)
    mixture_consistency: bool = True   # project the estimates so that they add up to the input
    logvar_min: float = -8.0
    logvar_max: float = 4.0
    talker_threshold: float = 0.0      # latent energy beyond K above which a file likely holds more than K
                                       # talkers: one warning line (0: no check; lvbd.talkers)


@dataclass
class LossConfig:
    """Weights of the named loss terms (total = sum(weight * term)) and permutation settings."""

    sep: float = 1.0
    mix: float = 0.1
    kl: float = 0.1                    # beta_max of the KL warm-up
    tc: float = 0.01
    perm: float = 0.1
    vol: float = 0.0
    pit: str = "sinkpit"               # upit | hungarian | sinkpit
    sinkpit_beta_start: float = 10.0
    sinkpit_beta_end: float = 100.0
    sinkpit_iters: int = 50
    kl_warmup_steps: int = 2000


@dataclass
class AugmentConfig:
    """Augmentation of dynamic mixing (``lvbd.data.augment``); every probability 0 = off, and
    the training items are then exactly the unaugmented ones."""

    speed_prob: float = 0.0            # per source: speed (tempo and pitch) x U[speed_min, speed_max]
    speed_min: float = 0.9
    speed_max: float = 1.1
    eq_prob: float = 0.0               # per source: 1-3 random peaking/shelf biquads
    eq_max_db: float = 10.0            # biquad gains uniform in +-eq_max_db
    reverb_prob: float = 0.0           # per item: one simulated room, a position per source
    rir_bank: str = ""                 # .npz cache; "" = <data.root>/rirs/bank-<rooms>-...npz
    rir_rooms: int = 100               # built once with pyroomacoustics (~1 s per room)
    rir_seed: int = 0
    rt60_min: float = 0.15
    rt60_max: float = 0.6
    gain_prob: float = 0.0             # per item: wider gains/level than the default mixing
    gain_range_db: float = 10.0        # any two sources differ by <= this (default mixing: 5)
    level_min_db: float = -40.0        # mixture level, dBFS (default mixing: -35...-15)
    level_max_db: float = -10.0
    noise_prob: float = 0.0            # per item: coloured noise, split equally over the stems
    snr_min_db: float = 10.0
    snr_max_db: float = 30.0
    noise_kinds: list[str] = field(default_factory=lambda: ["white", "pink", "brown", "band", "am"])
    band_prob: float = 0.0             # per item: one band limit on every stem
    band_kinds: list[str] = field(default_factory=lambda: ["telephone", "lowpass", "highpass"])
    codec_prob: float = 0.0            # per item: mu-law on the mixture, error split over the stems
    codec_bits: int = 8
    polarity_prob: float = 0.0         # per source: sign flipped (a recording's polarity is arbitrary)
    phase_prob: float = 0.0            # per source: 1-2 random first-order all-pass sections
                                       # (phase only, |H| = 1; corners log-uniform 40-1000 Hz)


@dataclass
class DataConfig:
    root: str = "data"
    splits_train: str = "train"        # manifest split used for dynamic mixing
    engines: list[str] = field(default_factory=lambda: ["espeak-ng"])
    segment_seconds: float = 4.0
    batch_size: int = 4
    num_workers: int = 0
    valid_items: int = 64              # fixed validation mixtures
    valid_segment_seconds: float = 4.0
    valid_polarity_phase: bool = False  # validation sources get a random polarity and, half the
                                       # time, a random all-pass (augment.polarity_phase): a
                                       # recording's polarity and phase response are arbitrary
    speaker_fraction: float = 1.0      # training speakers kept (0 < f <= 1): a fixed seeded subset,
                                       # nested (0.1 ⊂ 0.25 ⊂ 1), the same for every train.seed
                                       # (datasets.speaker_subset)
    engine_shares: dict[str, float] = field(default_factory=dict)  # engine -> share of the training
                                       # sources, e.g. {asterisk: 0.25}; unnamed engines split the rest by
                                       # utterance count ({}: every speaker by utterance count;
                                       # an engine that data.engines leaves out gets no share)
    same_speaker_prob: float = 0.0     # share of training items made of one speaker twice, the copy
                                       # 1.1-1.25x faster or slower (datasets.DynamicMixDataset)
    exclude_speakers: list[str] = field(default_factory=list)  # training speakers left out, e.g.
                                       # [asterisk:menardi] to validate on a real voice never heard
                                       # (benchmarks/valid_sets.py --unheard)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training items only


@dataclass
class TrainConfig:
    steps: int = 15000
    lr: float = 1e-3
    clip_grad: float = 5.0
    lr_patience: int = 5               # validations without improvement before halving the LR
    lr_factor: float = 0.5
    log_every: int = 25
    valid_every: int = 500
    checkpoint_every: int = 250
    seed: int = 0
    device: str = "auto"
    on_nonfinite: str = "stop"         # stop | skip
    threads: int = 0                   # torch threads; 0 = torch default
    budget_minutes: float = 0.0        # stop (validate, checkpoint) after this much wall time; 0 = none
    train_eval_items: int = 0          # fixed training mixtures scored like the validation ones at
                                       # each validation (train_eval_si_sdri); 0 = off


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _check_type(key: str, value: Any, expected: Any) -> Any:
    kind = expected if isinstance(expected, type) else type(expected)
    if isinstance(expected, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
        return value
    if isinstance(expected, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' expects an integer, got {value!r}")
        return value
    if isinstance(expected, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' expects a number, got {value!r}")
        return float(value)
    if isinstance(expected, str):
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' expects a string, got {value!r}")
        return value
    if isinstance(expected, dict):
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in value.items()):
            raise ConfigError(f"config key '{key}' expects a mapping of names to numbers, got {value!r}")
        return {k: float(v) for k, v in value.items()}
    if isinstance(expected, list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"config key '{key}' expects a list of strings, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has unsupported type {kind.__name__}")


def _update(obj: Any, values: dict[str, Any], prefix: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix or 'root'}' must be a mapping, got {values!r}")
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{full}' (known: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _update(current, value, full + ".")
        else:
            setattr(obj, key, _check_type(full, value, current))


def config_from_dict(values: dict[str, Any] | None) -> Config:
    cfg = Config()
    _update(cfg, values or {}, "")
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (safe_load; ``base:`` resolved) and apply ``section.key=value`` overrides."""
    values = _read_yaml(Path(path), ()) if path is not None else {}
    return apply_overrides(config_from_dict(values), overrides or [])


def _read_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The values of one config file with its ``base:`` chain merged in (the file's own win)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(values).__name__}")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"config {path}: 'base' must be a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(f"config {path}: 'base: {base}' makes a loop")
    return _merge(_read_yaml(base_path, seen + (path.resolve(),)), values)


def _merge(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` over ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars) in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override '{item}' must look like section.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (int, float)) and not isinstance(value, bool) and raw.strip() and isinstance(
                getattr(_lookup(cfg, key), key.rsplit(".", 1)[1], None), str):
            value = raw
        nested: dict[str, Any] = {}
        cursor = nested
        parts = key.split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        _update(cfg, nested, "")
    return cfg


def _lookup(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split(".")[:-1]:
        if not hasattr(obj, part):
            raise ConfigError(f"unknown config key '{key}'")
        obj = getattr(obj, part)
    return obj
