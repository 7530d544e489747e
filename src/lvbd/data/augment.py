"""Augmentation for dynamic mixing (numpy, float32 stems ``(K, L)``): speed, EQ, polarity and
phase, room reverberation, gain/level, additive noise, band-limiting and μ-law companding.

Every effect keeps the one invariant the training loop relies on: the mixture is the sum of the
returned stems (``refs.sum(1)``), and each stem is the training target of its source.

- Source effects (speed, EQ, polarity, phase, reverberation) change each source before mixing,
  so the target is the changed source: a reverberant source image, a faster talker, a talker
  recorded with the other polarity or through another microphone/preamp phase response.
- Channel effects happen to the mixture. A linear, time-invariant one (band-limiting) is applied
  with the same filter to every stem, which is the same as filtering the mixture. Noise and the
  μ-law error are not speech of any source: they are split equally over the K stems, stem ``k``
  getting ``e/K`` (see :func:`add_noise` and :func:`codec_split`).

``Augmenter`` applies them as :class:`lvbd.config.AugmentConfig` says; each effect draws from its
own generator seeded by ``(seed, index, stream)``, so turning one effect on or off never changes
the draws of another, nor the speakers, clips and gains of :meth:`DynamicMixDataset.plan`.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, fields
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import signal

from ..config import AugmentConfig
from ..errors import LvbdError
from ..fileio import atomic_open
from .mixing import NOISE_KINDS, coloured_noise, scale_noise

log = logging.getLogger(__name__)

BAND_KINDS = ("telephone", "lowpass", "highpass")
LOWPASS_HZ = (1500.0, 3600.0)      # random low-pass cutoff (8 kHz audio: Nyquist 4 kHz)
HIGHPASS_HZ = (50.0, 400.0)        # random high-pass cutoff
EQ_HZ = (80.0, 3600.0)             # centre / corner frequencies of the random biquads
EQ_Q = (0.5, 3.0)
PHASE_HZ = (40.0, 1000.0)          # corners of the random first-order all-pass sections
MU = 255.0                         # μ of G.711 μ-law
MAX_PEAK = 0.9                     # as mixing.mix_stems
PROBS = tuple(f.name for f in fields(AugmentConfig) if f.name.endswith("_prob"))
_STREAMS = {"speed": 1, "eq": 2, "reverb": 3, "gain": 4, "noise": 5, "band": 6, "codec": 7,
            "polarity": 8, "phase": 9}


# ---------------------------------------------------------------------------------- speed
def random_speed(rng: np.random.Generator, low: float = 0.9, high: float = 1.1,
                 max_denominator: int = 20) -> Fraction:
    """A speed factor uniform in [low, high], rounded to a ratio of small integers (≤ 20)."""
    return Fraction(float(rng.uniform(low, high))).limit_denominator(max_denominator)


def speed_perturb(wav: np.ndarray, factor: Fraction) -> np.ndarray:
    """Play ``wav`` (…, L) ``factor`` times faster: length ``≈ L / factor``, every frequency
    (pitch and formants) times ``factor`` — Kaldi-style speed perturbation by polyphase
    resampling (``resample_poly(up=den, down=num)``)."""
    factor = Fraction(factor)
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    if factor == 1:
        return np.asarray(wav, dtype=np.float32)
    out = signal.resample_poly(wav, factor.denominator, factor.numerator, axis=-1)
    return out.astype(np.float32)


# ------------------------------------------------------------------------------- filters
def peaking_biquad(f0: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """RBJ cookbook peaking EQ → one second-order section ``(6,)``; gain ``gain_db`` at ``f0``."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * f0 / sample_rate
    alpha, cos = math.sin(w0) / (2.0 * q), math.cos(w0)
    b = [1.0 + alpha * a, -2.0 * cos, 1.0 - alpha * a]
    den = [1.0 + alpha / a, -2.0 * cos, 1.0 - alpha / a]
    return np.array(b + den) / den[0]


def shelf_biquad(kind: str, f0: float, gain_db: float, sample_rate: int) -> np.ndarray:
    """RBJ cookbook low/high shelf (slope 1) → ``(6,)``; gain ``gain_db`` below/above ``f0``."""
    if kind not in ("low", "high"):
        raise ValueError(f"shelf kind must be 'low' or 'high', got {kind!r}")
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * f0 / sample_rate
    cos, beta = math.cos(w0), 2.0 * math.sqrt(a) * math.sin(w0) / 2.0 * math.sqrt(2.0)
    sign = 1.0 if kind == "low" else -1.0
    b = [a * ((a + 1) - sign * (a - 1) * cos + beta), sign * 2 * a * ((a - 1) - sign * (a + 1) * cos),
         a * ((a + 1) - sign * (a - 1) * cos - beta)]
    den = [(a + 1) + sign * (a - 1) * cos + beta, -sign * 2 * ((a - 1) + sign * (a + 1) * cos),
           (a + 1) + sign * (a - 1) * cos - beta]
    return np.array(b + den) / den[0]


def random_eq(rng: np.random.Generator, sample_rate: int, max_db: float = 10.0) -> np.ndarray:
    """1–3 random biquads (peaking, low or high shelf), gains uniform in ±max_db, frequencies
    log-uniform in ``EQ_HZ`` → second-order sections ``(n, 6)``."""
    sections = []
    for _ in range(int(rng.integers(1, 4))):
        kind = ("peak", "low", "high")[int(rng.integers(3))]
        f0 = float(np.exp(rng.uniform(*np.log(EQ_HZ))))
        f0 = min(f0, 0.45 * sample_rate)
        gain = float(rng.uniform(-max_db, max_db))
        if kind == "peak":
            q = float(np.exp(rng.uniform(*np.log(EQ_Q))))
            sections.append(peaking_biquad(f0, gain, q, sample_rate))
        else:
            sections.append(shelf_biquad(kind, f0, gain, sample_rate))
    return np.stack(sections)


def allpass_sections(corners_hz: Sequence[float], sample_rate: int) -> np.ndarray:
    """First-order all-pass sections ``(n, 6)``, one per corner: H(z) = (c + z⁻¹)/(1 + c z⁻¹),
    c = (tan(π f/fs) − 1)/(tan(π f/fs) + 1). |H| = 1 at every frequency; the phase turns from 0
    (DC) through −90° (at the corner) to −180° (Nyquist)."""
    rows = []
    for f in corners_hz:
        if not 0.0 < f < sample_rate / 2.0:
            raise ValueError(f"all-pass corner must lie in (0, {sample_rate / 2:g}) Hz, got {f}")
        t = math.tan(math.pi * f / sample_rate)
        c = (t - 1.0) / (t + 1.0)
        rows.append([c, 1.0, 0.0, 1.0, c, 0.0])
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def random_allpass(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """1–2 first-order all-pass sections, corners log-uniform in ``PHASE_HZ`` → ``(n, 6)``."""
    high = min(PHASE_HZ[1], 0.45 * sample_rate)
    corners = np.exp(rng.uniform(math.log(PHASE_HZ[0]), math.log(high), int(rng.integers(1, 3))))
    return allpass_sections(corners.tolist(), sample_rate)


def polarity_phase() -> AugmentConfig:
    """Sources with an arbitrary polarity (flipped with probability ½) and, half the time, a
    random all-pass: the validation sets of a model that must not separate by polarity or
    phase response (``data.valid_polarity_phase``, ``benchmarks/valid_sets.py``)."""
    return AugmentConfig(polarity_prob=0.5, phase_prob=0.5)


def band_filter(kind: str, sample_rate: int, cutoff_hz: float | None = None) -> np.ndarray:
    """Second-order sections of a band limit: ``telephone`` (elliptic band-pass, −3 dB at
    ≈315–3360 Hz, ≥ 40 dB down below 260 and above 3550 Hz: the 300–3400 Hz channel), or an
    order-8 Butterworth ``lowpass`` / ``highpass`` at ``cutoff_hz``."""
    nyquist = sample_rate / 2.0
    if kind == "telephone":
        if nyquist <= 3550.0:
            raise ValueError(f"telephone band needs sample_rate > 7100 Hz, got {sample_rate}")
        return _telephone(sample_rate).copy()
    if kind in ("lowpass", "highpass"):
        if cutoff_hz is None or not 0.0 < cutoff_hz < nyquist:
            raise ValueError(f"{kind} needs 0 < cutoff_hz < {nyquist:g}, got {cutoff_hz}")
        return signal.butter(8, cutoff_hz, kind, fs=sample_rate, output="sos")
    raise ValueError(f"band kind must be one of {BAND_KINDS}, got {kind!r}")


@functools.lru_cache(maxsize=4)
def _telephone(sample_rate: int) -> np.ndarray:
    return signal.iirdesign([320.0, 3350.0], [260.0, 3550.0], gpass=1.0, gstop=40.0,
                            ftype="ellip", fs=sample_rate, output="sos")


def random_band(rng: np.random.Generator, sample_rate: int,
                kinds: Sequence[str] = BAND_KINDS) -> tuple[str, np.ndarray]:
    """One of ``kinds``; low-pass cutoff uniform in ``LOWPASS_HZ``, high-pass in ``HIGHPASS_HZ``."""
    kind = kinds[int(rng.integers(len(kinds)))]
    cutoff = None
    if kind == "lowpass":
        cutoff = float(rng.uniform(LOWPASS_HZ[0], min(LOWPASS_HZ[1], 0.45 * sample_rate)))
    elif kind == "highpass":
        cutoff = float(rng.uniform(*HIGHPASS_HZ))
    return kind, band_filter(kind, sample_rate, cutoff)


# ------------------------------------------------------------------- noise and distortion
def add_noise(stems: np.ndarray, noise: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """Add ``noise`` (L,) to stems ``(K, L)`` at ``snr_db`` against their sum → (stems, noise).

    The noise n is scaled so that ``10·log10(|Σ_k s_k|² / |n|²) = snr_db`` and **split equally**:
    stem k becomes ``s_k + n/K``, so the mixture is ``Σ_k s_k + n``. Why equal shares: the
    separator's K outputs must add up to its input (mixture consistency), so the noise has to be
    in some target; a fixed share makes the target independent of the arbitrary source order
    (permutation-invariant training could not know which output is meant to carry it), and
    each target then differs from its clean source by the same, known ``n/K``.
    """
    stems = np.asarray(stems, dtype=np.float32)
    if stems.ndim != 2 or noise.shape != stems.shape[1:]:
        raise ValueError(f"expected stems (K, L) and noise (L,), got {tuple(stems.shape)} and "
                         f"{tuple(noise.shape)}")
    noise = scale_noise(stems.sum(axis=0), noise, snr_db)
    return stems + noise[None] / stems.shape[0], noise


def mu_law(wav: np.ndarray, bits: int = 8, mu: float = MU) -> np.ndarray:
    """μ-law companding with ``bits``-bit uniform quantisation of the companded value (G.711
    style at 8 bits): clip to [−1, 1], compress, quantise, expand. The error on a sample x is at
    most ``ln(1+μ)/μ · (1+μ·max(|x|, |x̂|)) / (2**bits − 1)``."""
    if bits < 2:
        raise ValueError(f"mu_law needs bits >= 2, got {bits}")
    x = np.clip(np.asarray(wav, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    levels = 2 ** bits - 1
    y = np.round((y + 1.0) / 2.0 * levels) / levels * 2.0 - 1.0
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


def codec_split(stems: np.ndarray, bits: int = 8, mu: float = MU) -> np.ndarray:
    """μ-law the **mixture**, and split its error e = C(m) − m equally over the stems (stem k
    gets ``e/K``, as :func:`add_noise` does with noise): the sum of the returned stems is the
    codec's output on the mixture, which per-stem companding would not give (μ-law is not
    additive: C(a) + C(b) ≠ C(a + b))."""
    stems = np.asarray(stems, dtype=np.float32)
    mixture = stems.sum(axis=0)
    error = mu_law(mixture, bits, mu) - mixture
    return stems + error[None] / stems.shape[0]


def limit_peak(stems: np.ndarray, max_peak: float = MAX_PEAK) -> np.ndarray:
    """Scale all stems by one factor so that no stem or mixture sample exceeds ``max_peak``."""
    peak = max(float(np.abs(stems).max(initial=0.0)), float(np.abs(stems.sum(0)).max(initial=0.0)))
    return stems * np.float32(max_peak / peak) if peak > max_peak else stems


# --------------------------------------------------------------------------------- rooms
@dataclass(frozen=True)
class RirBank:
    """Simulated room impulse responses: ``n_rooms`` shoebox rooms, one microphone and
    ``sources_per_room`` talker positions each."""

    rirs: np.ndarray          # (R, S, Lr) float32, zero-padded
    lengths: np.ndarray       # (R, S) samples of each RIR before padding
    direct: np.ndarray        # (R, S) sample index of the direct path
    rt60: np.ndarray          # (R,) target RT60 in seconds (Sabine)
    rooms: np.ndarray         # (R, 3) room size in metres
    sample_rate: int
    seed: int

    @property
    def n_rooms(self) -> int:
        return self.rirs.shape[0]

    @property
    def sources_per_room(self) -> int:
        return self.rirs.shape[1]


def build_rir_bank(n_rooms: int, sample_rate: int = 8000, seed: int = 0,
                   rt60_range: tuple[float, float] = (0.15, 0.6),
                   sources_per_room: int = 4) -> RirBank:
    """Simulate ``n_rooms`` shoebox rooms with pyroomacoustics' image source method.

    Per room (numpy generator seeded by ``seed``): RT60 uniform in ``rt60_range``; size uniform
    in 3–10 × 3–8 × 2.5–4 m, redrawn until Sabine's formula can reach the RT60 (absorption
    and ISM order from ``pra.inverse_sabine``); microphone and sources uniform at ≥ 0.5 m from
    the walls. About 1 s per room at RT60 0.4 s on one core (cubic in the ISM order).
    """
    import pyroomacoustics as pra

    if n_rooms < 1 or sources_per_room < 1 or not 0 < rt60_range[0] <= rt60_range[1]:
        raise ValueError(f"need n_rooms >= 1, sources_per_room >= 1 and 0 < rt60_min <= rt60_max; "
                         f"got {n_rooms}, {sources_per_room}, {rt60_range}")
    rng = np.random.default_rng(seed)
    speed_of_sound = pra.constants.get("c")
    delay = pra.constants.get("frac_delay_length") // 2  # pra centres each image on a sinc
    rirs, direct, rt60s, rooms = [], [], [], []
    for r in range(n_rooms):
        rt60 = float(rng.uniform(*rt60_range))
        for _ in range(1000):
            size = rng.uniform([3.0, 3.0, 2.5], [10.0, 8.0, 4.0])
            try:
                absorption, order = pra.inverse_sabine(rt60, size)
                break
            except ValueError:  # RT60 too short for this room
                continue
        else:
            raise LvbdError(f"no room of 3-10 x 3-8 x 2.5-4 m reaches RT60 {rt60:.2f} s")
        room = pra.ShoeBox(size, fs=sample_rate, materials=pra.Material(absorption),
                           max_order=order)
        mic = rng.uniform(0.5, size - 0.5)
        sources = [rng.uniform(0.5, size - 0.5) for _ in range(sources_per_room)]
        for position in sources:
            room.add_source(position)
        room.add_microphone(mic)
        room.compute_rir()
        rirs.append([np.asarray(room.rir[0][s], dtype=np.float32) for s in range(sources_per_room)])
        direct.append([round(np.linalg.norm(p - mic) / speed_of_sound * sample_rate) + delay
                       for p in sources])
        rt60s.append(rt60)
        rooms.append(size)
        if (r + 1) % 10 == 0 or r + 1 == n_rooms:
            log.info("RIR bank: %d/%d rooms simulated", r + 1, n_rooms)
    lengths = np.array([[len(h) for h in room_rirs] for room_rirs in rirs])
    padded = np.zeros((n_rooms, sources_per_room, lengths.max()), dtype=np.float32)
    for r, room_rirs in enumerate(rirs):
        for s, h in enumerate(room_rirs):
            padded[r, s, :len(h)] = h
    return RirBank(padded, lengths, np.array(direct), np.array(rt60s), np.array(rooms),
                   sample_rate, seed)


def save_rir_bank(bank: RirBank, path: str | Path) -> Path:
    """Write ``bank`` to an .npz atomically (a temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        np.savez(handle, rirs=bank.rirs, lengths=bank.lengths, direct=bank.direct,
                 rt60=bank.rt60, rooms=bank.rooms, sample_rate=bank.sample_rate, seed=bank.seed)
    return path


def load_rir_bank(path: str | Path) -> RirBank:
    try:
        with np.load(path) as z:
            return RirBank(z["rirs"], z["lengths"], z["direct"], z["rt60"], z["rooms"],
                           int(z["sample_rate"]), int(z["seed"]))
    except (OSError, KeyError, ValueError) as err:
        raise LvbdError(f"cannot read RIR bank {path}: {err}") from None


def rir_bank_path(root: str | Path, n_rooms: int, sample_rate: int, seed: int,
                  rt60_range: tuple[float, float]) -> Path:
    """Default cache file: ``root/rirs/bank-<rooms>-<rate>hz-rt<min>-<max>-seed<seed>.npz``."""
    return (Path(root) / "rirs" /
            f"bank-{n_rooms}-{sample_rate}hz-rt{rt60_range[0]:g}-{rt60_range[1]:g}-seed{seed}.npz")


def load_or_build_rir_bank(path: str | Path, n_rooms: int, sample_rate: int = 8000,
                           seed: int = 0, rt60_range: tuple[float, float] = (0.15, 0.6)
                           ) -> RirBank:
    """Read the bank cached at ``path``, or build it and cache it there. A cached bank made
    with another room count, rate, seed or RT60 range is an error, never silently used."""
    path = Path(path)
    if path.exists():
        bank = load_rir_bank(path)
        lo, hi = float(bank.rt60.min()), float(bank.rt60.max())
        if (bank.n_rooms, bank.sample_rate, bank.seed) != (n_rooms, sample_rate, seed) or \
                lo < rt60_range[0] - 1e-9 or hi > rt60_range[1] + 1e-9:
            raise LvbdError(f"RIR bank {path} holds {bank.n_rooms} rooms at {bank.sample_rate} Hz, "
                            f"seed {bank.seed}, RT60 {lo:.2f}-{hi:.2f} s; wanted {n_rooms} rooms, "
                            f"{sample_rate} Hz, seed {seed}, RT60 {rt60_range[0]}-{rt60_range[1]} "
                            f"s (delete it or point data.augment.rir_bank elsewhere)")
        return bank
    log.info("building a RIR bank of %d rooms at %d Hz into %s", n_rooms, sample_rate, path)
    bank = build_rir_bank(n_rooms, sample_rate, seed, rt60_range)
    save_rir_bank(bank, path)
    return bank


def reverberate(stems: np.ndarray, rirs: np.ndarray) -> np.ndarray:
    """Reverberant source images: stem k convolved with ``rirs[k]``, cut to the stem length."""
    length = stems.shape[-1]
    return signal.fftconvolve(stems, rirs, axes=-1)[:, :length].astype(np.float32)


# ---------------------------------------------------------------------------- the chain
def _filter_each(rng: np.random.Generator, stems: np.ndarray, prob: float, draw) -> np.ndarray:
    """Stems ``(K, L)``, each filtered with probability ``prob`` by the second-order sections
    ``draw(rng)``; the sections are drawn for every stem, filtered or not, so the draws never
    depend on ``prob``."""
    out = []
    for stem in stems:
        apply = rng.random() < prob
        sos = draw(rng)
        out.append(signal.sosfilt(sos, stem).astype(np.float32) if apply else stem)
    return np.stack(out)  # (K, L)


class Augmenter:
    """Applies :class:`AugmentConfig` to the items of a :class:`DynamicMixDataset`.

    Order: speed (on reading) → EQ → polarity → phase → reverberation → gains/level
    (``mix_stems``) → noise → band limit → peak limit → μ-law. Call :meth:`generators` once per item, then
    :meth:`speed_factors`, :meth:`sources`, :meth:`levels` and :meth:`channel` in that order.
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 8000,
                 root: str | Path | None = None, bank: RirBank | None = None):
        probs = {name: getattr(cfg, name) for name in PROBS}
        bad = [f"{k}={v}" for k, v in probs.items() if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"augment probabilities must lie in [0, 1]; got {', '.join(bad)}")
        for low, high in (("speed_min", "speed_max"), ("rt60_min", "rt60_max"),
                          ("snr_min_db", "snr_max_db"), ("level_min_db", "level_max_db")):
            if getattr(cfg, low) > getattr(cfg, high):
                raise ValueError(f"augment.{low} ({getattr(cfg, low)}) exceeds augment.{high} "
                                 f"({getattr(cfg, high)})")
        if cfg.speed_min <= 0:
            raise ValueError(f"augment.speed_min must be > 0, got {cfg.speed_min}")
        for key, kinds, known in (("noise_kinds", cfg.noise_kinds, NOISE_KINDS),
                                  ("band_kinds", cfg.band_kinds, BAND_KINDS)):
            if not kinds or any(k not in known for k in kinds):
                raise ValueError(f"augment.{key} must be a non-empty subset of {known}, got {kinds}")
        self.cfg, self.sample_rate = cfg, sample_rate
        self.bank = bank
        if cfg.reverb_prob > 0 and bank is None:
            rt60 = (cfg.rt60_min, cfg.rt60_max)
            path = cfg.rir_bank or rir_bank_path(root if root is not None else ".", cfg.rir_rooms,
                                                 sample_rate, cfg.rir_seed, rt60)
            self.bank = load_or_build_rir_bank(path, cfg.rir_rooms, sample_rate, cfg.rir_seed, rt60)

    @property
    def active(self) -> bool:
        """False when every probability is 0: the dataset then skips augmentation entirely."""
        return any(getattr(self.cfg, name) > 0 for name in PROBS)

    @staticmethod
    def generators(seed: int, index: int) -> dict[str, np.random.Generator]:
        """One generator per effect, seeded by ``(seed, index, stream)``."""
        return {name: np.random.default_rng([seed, index, 1000 + s]) for name, s in _STREAMS.items()}

    def speed_factors(self, rngs: dict[str, np.random.Generator], n_sources: int) -> list[Fraction]:
        """Per source: with ``speed_prob``, a factor in [speed_min, speed_max]; else 1."""
        rng, c = rngs["speed"], self.cfg
        factors = []
        for _ in range(n_sources):
            apply = rng.random() < c.speed_prob
            factor = random_speed(rng, c.speed_min, c.speed_max)
            factors.append(factor if apply else Fraction(1))
        return factors

    def sources(self, rngs: dict[str, np.random.Generator], stems: np.ndarray) -> np.ndarray:
        """EQ, polarity and phase (per source, ``eq_prob``, ``polarity_prob``, ``phase_prob`` each)
        and reverberation (per item, ``reverb_prob``: one room of the bank, a different talker
        position per source)."""
        c = self.cfg
        stems = np.asarray(stems, dtype=np.float32)
        K = stems.shape[0]
        if c.eq_prob > 0:
            stems = _filter_each(rngs["eq"], stems, c.eq_prob,
                                 lambda rng: random_eq(rng, self.sample_rate, c.eq_max_db))
        if c.polarity_prob > 0:
            flip = rngs["polarity"].random(K) < c.polarity_prob  # (K,)
            stems = np.where(flip[:, None], -stems, stems)
        if c.phase_prob > 0:
            stems = _filter_each(rngs["phase"], stems, c.phase_prob,
                                 lambda rng: random_allpass(rng, self.sample_rate))
        if c.reverb_prob > 0 and rngs["reverb"].random() < c.reverb_prob:
            rng, bank = rngs["reverb"], self.bank
            room = int(rng.integers(bank.n_rooms))
            where = rng.choice(bank.sources_per_room, K, replace=K > bank.sources_per_room)
            length = int(bank.lengths[room, where].max())
            stems = reverberate(stems, bank.rirs[room, where, :length])  # (K, L)
        return stems

    def levels(self, rngs: dict[str, np.random.Generator], gains_db: np.ndarray,
               level_db: float) -> tuple[np.ndarray, float]:
        """With ``gain_prob``: relative gains uniform in ±gain_range_db/2 (any two sources differ
        by ≤ gain_range_db) and overall level uniform in [level_min_db, level_max_db] dBFS,
        instead of the plan's ±2.5 dB and −35…−15 dBFS."""
        c = self.cfg
        if c.gain_prob > 0 and rngs["gain"].random() < c.gain_prob:
            rng = rngs["gain"]
            half = c.gain_range_db / 2.0
            gains_db = rng.uniform(-half, half, size=len(gains_db))
            level_db = float(rng.uniform(c.level_min_db, c.level_max_db))
        return np.asarray(gains_db), level_db

    def channel(self, rngs: dict[str, np.random.Generator], stems: np.ndarray) -> np.ndarray:
        """Noise (``noise_prob``), band limit (``band_prob``), peak limit, μ-law (``codec_prob``)
        on the mixed stems; each keeps ``stems.sum(0)`` the mixture."""
        c = self.cfg
        L = stems.shape[-1]
        if c.noise_prob > 0 and rngs["noise"].random() < c.noise_prob:
            rng = rngs["noise"]
            kind = c.noise_kinds[int(rng.integers(len(c.noise_kinds)))]
            snr = float(rng.uniform(c.snr_min_db, c.snr_max_db))
            stems, _ = add_noise(stems, coloured_noise(rng, L, self.sample_rate, kind), snr)
        if c.band_prob > 0 and rngs["band"].random() < c.band_prob:
            _, sos = random_band(rngs["band"], self.sample_rate, c.band_kinds)
            stems = signal.sosfilt(sos, stems, axis=-1).astype(np.float32)
        stems = limit_peak(stems)
        if c.codec_prob > 0 and rngs["codec"].random() < c.codec_prob:
            stems = codec_split(stems, c.codec_bits)
        return stems.astype(np.float32)

