#!/usr/bin/env bash
# The prepared GPU check (issue "GPU path"): one run, ≤ 8 minutes, on a machine with one NVIDIA
# GPU, no internet, a copy of the working tree and a prebuilt release binary
# (`cargo build --release --features cuda` on the build machine; carry target/release/simgan).
#
#   ci/gpu-check.sh [--device cuda:0] [--bin PATH] [--out DIR] [--rows N]
#   ci/gpu-check.sh --device cpu          # the dry run CI does: same steps, small sizes
#
# Steps, each with its command in the JSON: (a) `simgan probe`; (b) correctness (f32 against the
# CPU, and bf16 and f16 against the CPU's f32), (c) refiner inference images/s at batch
# 256/1024/4096 in each precision, (d) `refine` end to end of N generated eyes on one
# and two lanes, (f) one R + D iteration at batch 512 — all `simgan bench --sections gpu`; the
# host side of refine without the model (`--sections host`); (e) PyTorch on the same
# architecture (fp32, TF32, bf16 channels_last) when `torch` imports with CUDA, else the reason.
# Writes DIR/gpu-check.json (default $OUT, else ./gpu-check) and prints it.
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda:0
bin=""
out="${OUT:-gpu-check}"
rows=200000
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --rows) rows="$2"; shift 2 ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  for b in "${CARGO_TARGET_DIR:-target}/release/simgan" "${CARGO_TARGET_DIR:-target}/debug/simgan"; do
    if [ -x "$b" ]; then bin="$b"; break; fi
  done
fi
[ -x "$bin" ] || { echo "gpu-check: no simgan binary (build it, or pass --bin)" >&2; exit 2; }
mkdir -p "$out"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/simgan-gpu-check.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
if [ "$device" = cpu ]; then
  # Dry run: every step, sizes a 2-core CI machine does in seconds.
  gpu_args=(--width 4 --refine-rows 2000 --batches 16,64 --check-images 32 --train-batch 8)
  host_rows=2000
else
  gpu_args=(--width 64 --refine-rows "$rows" --batches 256,1024,4096 --check-images 1024 --train-batch 512)
  host_rows="$rows"
fi

# step NAME LIMIT_S CMD...: run CMD with a time limit; its stdout (JSON, or a line) goes to
# NAME.out, stderr to NAME.err; NAME.cmd records the command and NAME.rc its exit status.
step() {
  local name="$1" limit="$2"; shift 2
  printf '%s\n' "$*" >"$out/$name.cmd"
  timeout "$limit" "$@" >"$out/$name.out" 2>"$out/$name.err"
  echo $? >"$out/$name.rc"
  echo "gpu-check: $name exit $(cat "$out/$name.rc")" >&2
}

step probe 30 "$bin" probe "$device"
if [ "$(cat "$out/probe.rc")" = 0 ]; then
  step gpu 300 "$bin" bench --sections gpu --device "$device" "${gpu_args[@]}" --scratch "$scratch/gpu"
  rm -rf "$scratch/gpu"
  step host 120 "$bin" bench --sections host --refine-rows "$host_rows" --scratch "$scratch/host"
  rm -rf "$scratch/host"
fi
python="${SIMGAN_TORCH_PYTHON:-python3}"
if [ "$device" != cpu ] && "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  step torch 180 "$python" benches/torch_refiner.py --device cuda --width 64 --batch 512 --batches 256,1024,4096 --iters 5
else
  printf 'torch with CUDA is not importable with %s (or the device is the CPU): PyTorch skipped\n' "$python" >"$out/torch.skipped"
fi

# One JSON document: each step's command, exit status and output (parsed when it is JSON).
python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
doc = {}
for name in ("probe", "gpu", "host", "torch"):
    p = os.path.join(out, name)
    if os.path.exists(p + ".skipped"):
        doc[name] = {"skipped": open(p + ".skipped").read().strip()}
        continue
    if not os.path.exists(p + ".cmd"):
        doc[name] = {"skipped": "not run: the probe failed"}
        continue
    text = open(p + ".out").read()
    try:
        body = json.loads(text)
    except ValueError:
        body = text.strip()
    err = open(p + ".err").read().strip().splitlines()
    doc[name] = {"command": open(p + ".cmd").read().strip(), "exit": int(open(p + ".rc").read()),
                 "output": body, "stderr_tail": err[-5:]}
json.dump(doc, open(os.path.join(out, "gpu-check.json"), "w"), indent=2)
print(json.dumps(doc, indent=2))
ok = all(v.get("exit", 0) == 0 for v in doc.values())
sys.exit(0 if ok else 1)
EOF
