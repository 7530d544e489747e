#!/usr/bin/env bash
# One-command training run on a GPU machine without a package index (docs/gpu.md).
#
#   scripts/gpu_train.sh [--pack DIR] [--wheels DIR] [--init CKPT] [--config YAML]
#                        [--minutes M] [--out DIR] [--batch-size B] [--workers W]
#                        [--set section.key=value ...] [--skip-wheels] [--dry-run-tiny]
#
# Installs soundfile (+ cffi) from the carried wheels into a temporary folder (the machine's
# torch is left alone), trains from source on the pack for M minutes of wall time
# (train.budget_minutes: validate, checkpoint, stop), exports the best checkpoint and writes
# to OUT: best.safetensors, best.json, last.safetensors, metrics.jsonl, config.yaml,
# summary.json, train.log (7 files, each checked to be <= 16 MiB). The whole script ends
# within M minutes + 90 s (M <= 7.5, so <= 9 minutes; default 7.5): start-up, the last
# validation and the export fit the 90 s, and a hard limit stops training if they do not.
# Any failure ends with one line "gpu_train: error: ..." on stderr and exit code 1.
#
# --dry-run-tiny: a CPU smoke run for tests (configs/tiny.yaml, 3 steps, batch 2, M = 0.5).
# --skip-wheels: use the soundfile that already imports (refused when it does not).
set -euo pipefail

die() { printf 'gpu_train: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'gpu_train: %s\n' "$*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/lvbd-gpu.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
MAX_TOTAL_S=540                     # 9 minutes, whatever --minutes says
OVERHEAD_S=90                       # wheels, start-up, last validation, export, summary
EXPORT_RESERVE_S=20                 # export + summary after training
MAX_FILE_BYTES=$((16 * 1024 * 1024))

pack=pack wheels=wheels init="" config="" minutes="" out=${OUT:-} batch="" workers=""
skip_wheels=0 tiny=0
sets=()
while (($#)); do
    case $1 in
        --pack|--wheels|--init|--config|--minutes|--out|--batch-size|--workers|--set)
            (($# >= 2)) || die "$1 needs a value"
            case $1 in
                --pack) pack=$2 ;; --wheels) wheels=$2 ;; --init) init=$2 ;;
                --config) config=$2 ;; --minutes) minutes=$2 ;; --out) out=$2 ;;
                --batch-size) batch=$2 ;; --workers) workers=$2 ;; --set) sets+=("--set" "$2") ;;
            esac
            shift 2 ;;
        --skip-wheels) skip_wheels=1; shift ;;
        --dry-run-tiny) tiny=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
if ((tiny)); then
    config=${config:-configs/tiny.yaml} minutes=${minutes:-0.5} batch=${batch:-2}
    workers=${workers:-0}
else
    config=${config:-configs/default.yaml} minutes=${minutes:-7.5} batch=${batch:-32}
    workers=${workers:-8}
fi

# ---- checks before anything runs
[[ -n $out ]] || die "no --out given and \$OUT is unset"
[[ $minutes =~ ^[0-9]*[.]?[0-9]+$ && ! $minutes =~ ^[0.]+$ ]] \
    || die "--minutes expects a number > 0, got '$minutes'"
[[ $batch =~ ^[1-9][0-9]*$ ]] || die "--batch-size expects an integer >= 1, got '$batch'"
[[ $workers =~ ^[0-9]+$ ]] || die "--workers expects an integer >= 0, got '$workers'"
total_s=$(awk -v m="$minutes" -v o="$OVERHEAD_S" 'BEGIN { printf "%d", m * 60 + o }')
((total_s <= MAX_TOTAL_S)) || die "--minutes $minutes: the run would exceed 9 minutes (use <= 7.5)"
[[ -f $pack/manifest.csv ]] \
    || die "no pack at '$pack' (build it: lvbd data pack --root data --out $pack; carry it)"
[[ -f $config ]] || die "no config file '$config'"
[[ -z $init || -f $init ]] || die "--init: no checkpoint '$init'"
pack=$(cd "$pack" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
[[ ! -e $out/run ]] || die "$out/run already exists; give an empty --out"

# ---- soundfile from the carried wheels, into a temporary site folder
if ((skip_wheels)); then
    "$PYTHON" -c 'import soundfile' 2>/dev/null \
        || die "--skip-wheels: soundfile does not import here; carry the wheels (docs/gpu.md)"
    say "wheels skipped: soundfile already imports"
else
    [[ -d $wheels ]] || die "no wheels folder '$wheels' (fetch it as docs/gpu.md says; carry it)"
    compgen -G "$wheels/soundfile-*.whl" >/dev/null \
        || die "no soundfile wheel in '$wheels' (fetch it as docs/gpu.md says)"
    site=$scratch/site pip_log=$scratch/pip.log
    "$PYTHON" -m pip install --no-index --no-deps --no-compile --no-cache-dir \
        --disable-pip-version-check --quiet --find-links "$wheels" --target "$site" \
        soundfile cffi >"$pip_log" 2>&1 \
        || die "pip could not install soundfile and cffi from '$wheels': $(tail -n 1 "$pip_log")"
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
    say "installed soundfile and cffi from $wheels into $site"
fi
export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}

# ---- preflight: every import the run needs, and the device it will train on
preflight_log=$scratch/preflight.log
device=$("$PYTHON" - "$tiny" 2>"$preflight_log" <<'EOF'
import sys
import soundfile
import torch
import lvbd.train
import lvbd.data.datasets

if "FLAC" not in soundfile.available_formats():
    sys.exit(f"soundfile {soundfile.__version__} cannot read FLAC")
if torch.cuda.is_available():
    sys.stdout.write(f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})")
elif sys.argv[1] == "1":
    sys.stdout.write(f"cpu (torch {torch.__version__})")
else:
    sys.exit("no CUDA device visible to torch (use --dry-run-tiny for a CPU smoke run)")
EOF
) || die "preflight failed: $(tail -n 1 "$preflight_log")"
say "device: $device"

# ---- train: the budget stops it; the hard limit stops it if that fails
budget_sets=(--set "data.root=$pack" --set "train.budget_minutes=$minutes"
             --set "data.batch_size=$batch" --set "data.num_workers=$workers")
if ((tiny)); then
    budget_sets+=(--set train.device=cpu --set train.steps=3 --set train.valid_every=3
                  --set train.checkpoint_every=3 --set train.threads=1)
else
    budget_sets+=(--set train.device=auto)
fi
hard_s=$((total_s - EXPORT_RESERVE_S - SECONDS))
((hard_s >= 30)) || die "only ${hard_s}s left for training after start-up"
run=$out/run
init_args=()
[[ -z $init ]] || init_args=(--init "$init")
say "training $config for $minutes min (hard limit ${hard_s}s) into $run"
train_start=$SECONDS
rc=0
timeout --signal=INT --kill-after=10 "$hard_s" \
    "$PYTHON" -m lvbd train --config "$config" "${init_args[@]}" --run-dir "$run" \
    "${budget_sets[@]}" "${sets[@]}" 2>&1 | tee "$out/train.log" >&2 || rc=$?
train_s=$((SECONDS - train_start))
stopped=steps
grep -q 'time budget of .* reached' "$out/train.log" && stopped=budget
if ((rc == 124 || rc == 137)); then
    stopped=hard-limit
    say "training overran its hard limit of ${hard_s}s and was stopped"
elif ((rc != 0)); then
    die "training failed (exit $rc): $(grep -v '^\s*$' "$out/train.log" | tail -n 1)"
fi
[[ -f $run/best.safetensors ]] || die "training wrote no best checkpoint (see $out/train.log)"

# ---- export and collect (each file <= 16 MiB, at most 8 files, no sub-folders)
"$PYTHON" -m lvbd export "$run/best.safetensors" "$out/best" \
    --note "scripts/gpu_train.sh on $device" 2>>"$out/train.log" \
    || die "export failed: $(tail -n 1 "$out/train.log")"
for name in last.safetensors metrics.jsonl config.yaml; do
    if [[ -f $run/$name ]]; then mv "$run/$name" "$out/$name"; fi
done
rm -rf "$run"
"$PYTHON" - "$out" "$pack" "$device" "$config" "$minutes" "$batch" "$train_s" "$SECONDS" \
    "$stopped" "${sets[@]}" <<'EOF' || die "summary failed"
import json
import sys
from pathlib import Path

out, pack, device, config, minutes, batch, train_s, total_s, stopped = sys.argv[1:10]
rows = [json.loads(r) for r in (Path(out) / "metrics.jsonl").read_text().splitlines() if r]
valid = [r for r in rows if "valid_si_sdri" in r]
best = max(valid, key=lambda r: r["valid_si_sdri"]) if valid else {}
speed = sorted(r["sec_per_step"] for r in rows if "sec_per_step" in r)
pack_info = Path(pack, "pack.json")
summary = {
    "steps": rows[-1]["step"] if rows else 0,
    "best_valid_si_sdri": best.get("valid_si_sdri"), "best_step": best.get("step"),
    "last_valid_si_sdri": valid[-1]["valid_si_sdri"] if valid else None,
    "median_sec_per_step": speed[len(speed) // 2] if speed else None,
    "train_wall_s": int(train_s), "script_wall_s_before_summary": int(total_s),
    "stopped_by": stopped, "device": device, "config": config,
    "budget_minutes": float(minutes), "batch_size": int(batch), "extra_sets": sys.argv[11::2],
    "pack": json.loads(pack_info.read_text())["splits"] if pack_info.exists() else None,
}
(Path(out) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
score = "none" if best.get("valid_si_sdri") is None else f"{best['valid_si_sdri']:.2f} dB"
sys.stderr.write(f"gpu_train: {summary['steps']} steps on {device}, best valid SI-SDRi {score} "
                 f"at step {best.get('step')}, training {train_s} s, stopped by {stopped}\n")
EOF
if (($(stat -c %s "$out/train.log") > MAX_FILE_BYTES)); then   # keep the end of the log
    tail -c $((MAX_FILE_BYTES / 2)) "$out/train.log" >"$out/train.log.tmp"
    mv "$out/train.log.tmp" "$out/train.log"
fi
too_big=()
for file in "$out"/*; do
    if (($(stat -c %s "$file") > MAX_FILE_BYTES)); then
        mv "$file" "${TMPDIR:-/tmp}/" && too_big+=("$(basename "$file")")   # kept, not returned
    fi
done
((${#too_big[@]} == 0)) || die "over 16 MiB, moved out of $out: ${too_big[*]}"
[[ $stopped != hard-limit ]] \
    || die "training hit the hard limit; $out holds the best checkpoint so far"
say "done in ${SECONDS}s; $out holds: $(cd "$out" && echo *)"
