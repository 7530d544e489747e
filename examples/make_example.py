"""Make ``examples/mix.wav`` (+ ``mix_s1.wav``, ``mix_s2.wav`` references): a 5 s, 8 kHz mono
16-bit mixture of two voices that no research model has heard:

* s1: flite ``slt`` (CMU ARCTIC voice, BSD-style licence) reading a sentence written here;
* s2: Carlo, the Italian Asterisk prompt voice (``asterisk-core-sounds-it-wav``,
  CC-BY-SA-3.0, © Digium / Sangoma): three prompts joined.

Because s2 comes from CC-BY-SA-3.0 recordings, the three wav files are CC-BY-SA-3.0 too.
mbrola voices are avoided (non-commercial licence). Uses the corpus code: ``synth`` for the
voices and silence trimming, ``mixing`` for the crop/pad and the mix (s1 + s2 = mix).

    .venv/bin/python examples/make_example.py [--out-dir examples]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

from lvbd.audio import save
from lvbd.data.mixing import crop_or_pad, mix_stems
from lvbd.data.synth import ASTERISK_ROOT, load_prompts, synthesize
from lvbd.data.voices import Voice

SAMPLE_RATE = 8000
SECONDS = 5.0
TEXT = ("The morning train was late again, so we walked along the river and "
        "talked about the weather.")
CARLO = ASTERISK_ROOT / "it_IT_m_Carlo"


def carlo_prompts(seconds: float, seed: int = 0) -> list[Path]:
    """Seeded choice of 1.5–3.5 s top-level prompts until their raw length reaches ``seconds``."""
    candidates = [p for p in sorted(CARLO.glob("*.wav")) if 1.5 <= sf.info(str(p)).duration <= 3.5]
    rng = np.random.default_rng(seed)
    chosen, total = [], 0.0
    for i in rng.permutation(len(candidates)):
        chosen.append(candidates[i])
        total += sf.info(str(candidates[i])).duration
        if total >= seconds:
            break
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args(argv)
    length = round(SECONDS * SAMPLE_RATE)
    slt = synthesize(Voice("flite", "slt"), TEXT, SAMPLE_RATE)
    carlo = load_prompts(carlo_prompts(SECONDS + 1.0), SAMPLE_RATE)
    stems = np.stack([crop_or_pad(slt, length, 0), crop_or_pad(carlo, length, 0)])  # (K, L)
    stems, mixture = mix_stems(stems, np.array([0.0, -1.0]), level_db=-22.0, max_peak=0.9)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save(out / "mix.wav", mixture, SAMPLE_RATE)
    for k, stem in enumerate(stems):
        save(out / f"mix_s{k + 1}.wav", stem, SAMPLE_RATE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
