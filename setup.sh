#!/usr/bin/env bash
# Set up lvbd: a .venv with the package (and dev tools). As root (or with --corpus) also the
# Debian audio packages that the corpus builder's defaults and the tests use (espeak-ng, mbrola us1-3/en1
# and nl1, flite, festival kal/ked/slt-hts and el, Asterisk core sounds); with --voices every
# allowed speech package (all mbrola-* voices, the festvox-* voices lvbd uses, the Asterisk
# prompt speakers es-co, Armelle and Menardi). Only these speech sources are allowed; the
# others are kept for independent evaluation. Nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")"
# as root the test/corpus packages come by default, so the README's setup leaves no test skipped
corpus=0
[ "$(id -u)" = 0 ] && corpus=1
voices=0
for arg in "$@"; do
  case "$arg" in
    --corpus) corpus=1 ;;
    --voices) corpus=1; voices=1 ;;
    --no-apt) corpus=0; voices=0 ;;
    -h|--help) echo "usage: ./setup.sh [--corpus | --voices | --no-apt]"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
# the corpus builder's defaults and the tests (small: CI installs this)
corpus_packages=(
  espeak-ng sox flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes
  asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav
  asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav
  mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 mbrola-nl1 festvox-ellpc11k
)
# every voice in src/lvbd/data/voices.py (mbrola voices without an espeak-ng voice, bz1 and
# hn1, are left out; festvox-*8k conflict with the 16 kHz packages of the same speakers)
mbrola_voices="af1 ar1 ar2 br1 br2 br3 br4 ca1 ca2 cn1 cr1 cz1 cz2 de1 de2 de3 de4 de5 de6 de7
  de8 ee1 en1 es1 es2 es3 es4 fr1 fr2 fr3 fr4 fr5 fr6 fr7 gr1 gr2 hb1 hb2 hu1 ic1 id1 in1 in2
  ir1 it1 it2 it3 it4 jp1 jp2 jp3 la1 lt1 lt2 ma1 mx1 mx2 nl1 nl2 nl3 nz1 pl1 pt1 ro1 sw1 sw2
  tl1 tr1 tr2 us1 us2 us3 vz1"
voice_packages=(
  festvox-rablpc16k festvox-don festvox-ellpc11k festvox-italp16k festvox-itapc16k
  festvox-ca-ona-hts festvox-czech-dita festvox-czech-krb festvox-czech-machac festvox-czech-ph
  festvox-ru festvox-suopuhe-lj festvox-suopuhe-mv
  asterisk-prompt-es-co asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav
)
for v in $mbrola_voices; do voice_packages+=("mbrola-$v"); done
if [ "$corpus" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup.sh: --corpus/--voices need root (apt-get)" >&2; exit 1; fi
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ]; then sed -i 's/^Components: main$/Components: main contrib non-free/' "$src"; fi
  apt-get update -qq
  packages=("${corpus_packages[@]}")
  if [ "$voices" = 1 ]; then packages+=("${voice_packages[@]}"); fi
  install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
  if ! install "${packages[@]}"; then
    # one unavailable package fails the whole transaction: install the rest one by one
    for package in "${packages[@]}"; do
      install "$package" || echo "setup.sh: warning: $package could not be installed; the corpus builder skips it" >&2
    done
  fi
elif [ "$(id -u)" != 0 ]; then
  echo "setup.sh: note: not root, Debian audio packages not installed (tests that need espeak-ng/festival fail; run 'sudo ./setup.sh --corpus')" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch is pinned to the CPU wheel (torch==2.13.0); anything else pulls a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev]"
echo "setup.sh: ready: $(.venv/bin/lvbd --version 2>/dev/null || echo lvbd)"
