#!/usr/bin/env bash
# Set up lvbd: a .venv with the package (and dev tools); with --corpus also the Debian
# audio packages the corpus builder uses (espeak-ng, mbrola, flite, festival, asterisk sounds).
set -euo pipefail
cd "$(dirname "$0")"
corpus=0
for arg in "$@"; do
  case "$arg" in
    --corpus) corpus=1 ;;
    -h|--help) echo "usage: ./setup.sh [--corpus]"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
if [ "$corpus" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then echo "setup.sh: --corpus needs root (apt-get)" >&2; exit 1; fi
  src=/etc/apt/sources.list.d/debian.sources
  if [ -f "$src" ]; then sed -i 's/^Components: main$/Components: main contrib non-free/' "$src"; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    espeak-ng sox flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes \
    asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav asterisk-core-sounds-fr-wav \
    asterisk-core-sounds-it-wav asterisk-core-sounds-ru-wav \
    mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 >/dev/null \
    || echo "setup.sh: warning: some audio packages could not be installed; the corpus builder skips them" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch is pinned to the CPU wheel (torch==2.13.0); anything else pulls a multi-GB CUDA build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[dev]"
echo "setup.sh: ready: $(.venv/bin/lvbd --version 2>/dev/null || echo lvbd)"
