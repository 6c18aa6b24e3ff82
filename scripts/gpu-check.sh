#!/usr/bin/env bash
# One GPU check, <= 8 minutes on one H200 (or any single CUDA GPU with >= 80 GB):
#   1. memplan bench (matmul TFLOP/s per dtype, copy bandwidth)
#   2. the reference decoder at ~1B parameters (980,494,336: Llama-style, 18 layers, hidden 2048, GQA 16/8 heads,
#      SwiGLU 5632, vocab 32000), seq 2048, micro-batch 1, 4, 8, recipes bf16-mixed and fp32, AdamW (foreach),
#      each measured on cuda and the same step under fake tensors;
#   3. one table: estimated, measured allocated, reserved, fake, NVML used, step time, TFLOP/s, MFU.
# Results (JSON per run, the bench, the table) go to $OUT (default: ./gpu-check-<UTC time>/).
# Usage: scripts/gpu-check.sh [OUTDIR]
set -euo pipefail

OUT="${1:-${OUT:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
MEMPLAN=("$PY" -m memplan)
MODEL=(1 --layers 18 --hidden 2048 --heads 16 --kv-heads 8 --ffn 5632 --vocab 32000 --max-positions 2048
       --mlp swiglu --norm rmsnorm --seq 2048 --model-source reference --optimizer adamw --optimizer-impl foreach)
# dry run of the mechanics without a GPU: GPU_CHECK_DEVICE=cpu GPU_CHECK_TINY=1 scripts/gpu-check.sh /tmp/x
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
if [[ -n "${GPU_CHECK_TINY:-}" ]]; then
  MODEL=(1 --layers 2 --hidden 64 --heads 4 --kv-heads 2 --ffn 160 --vocab 512 --max-positions 64 --seq 32
         --model-source reference --optimizer adamw --optimizer-impl foreach)
fi
BATCHES=(1 4 8)
RECIPES=(bf16-mixed fp32)
START=$(date +%s)

"$PY" - "$DEVICE" <<'EOF'
import sys, torch
if sys.argv[1] != "cuda":
    print(f"DRY RUN on {sys.argv[1]}: no GPU figures"); sys.exit(0)
assert torch.cuda.is_available(), "gpu-check.sh needs a CUDA GPU"
p = torch.cuda.get_device_properties(0)
print(f"device: {p.name}, {p.total_memory / 2**30:.1f} GiB, torch {torch.__version__}, cuda {torch.version.cuda}")
EOF

echo "== bench" >&2
timeout 120 "${MEMPLAN[@]}" bench --device "$DEVICE" --repeats 10 --out "$OUT/bench.json" --force | tee "$OUT/bench.txt"

for recipe in "${RECIPES[@]}"; do
  for b in "${BATCHES[@]}"; do
    for device in "$DEVICE" fake; do
      name="$OUT/${recipe}-b${b}-${device/$DEVICE/measured}.json"
      echo "== $recipe micro-batch $b on $device ($(( $(date +%s) - START )) s elapsed)" >&2
      # a failed run (e.g. OOM outside the measured step) leaves an error file and the table says so
      if ! timeout 150 "${MEMPLAN[@]}" profile "${MODEL[@]}" -p "$recipe" -b "$b" --device "$device" \
           --timed-steps 5 --json > "$name" 2> "$name.log"; then
        echo "   failed: see $name.log" >&2
      fi
    done
  done
done

"$PY" - "$OUT" <<'EOF' | tee "$OUT/table.txt"
import json, sys
from pathlib import Path
from tabulate import tabulate

out = Path(sys.argv[1])
gib = lambda b: "-" if b is None else f"{b / 2**30:.2f}"
rows = []
for recipe in ("bf16-mixed", "fp32"):
    for b in (1, 4, 8):
        def load(device):
            p = out / f"{recipe}-b{b}-{device}.json"
            try:
                return json.loads(p.read_text())
            except (OSError, ValueError):
                return None
        cu, fk = load("measured"), load("fake")
        if cu is None:
            rows.append([recipe, b] + ["failed"] + ["-"] * 9)
            continue
        m, e, meas = cu["measured"], cu["estimated"] or {}, cu["measurement"]
        c = meas.get("cuda") or {}
        err = cu["error_percent"]
        fake_peak = fk["measured"]["peak_allocated"] if fk else None
        rows.append([
            recipe, b, gib(e.get("peak_allocated")), gib(m["peak_allocated"]), gib(c.get("reserved_peak_bytes")),
            gib(fake_peak), gib(c.get("nvml_used_bytes")),
            f"{err:+.1f}%" if err is not None else "-",
            f"{c['step_seconds'] * 1e3:.0f}" if c.get("step_seconds") else "-",
            f"{c['achieved_tflops']:.0f}" if c.get("achieved_tflops") else "-",
            f"{c['mfu']:.1%}" if c.get("mfu") is not None else "-",
            ("OOM in " + str(cu["oom_phase"])) if cu.get("oom") else m["peak_phase"],
        ])
print(tabulate(rows, headers=["recipe", "b", "estimated GiB", "allocated GiB", "reserved GiB", "fake GiB",
                              "NVML used GiB", "est. error", "step ms", "TFLOP/s", "MFU", "peak phase"]))
print("\nestimated: memplan estimate (peak_allocated); allocated: torch.cuda max_memory_allocated of the step; "
      "fake: the same step under FakeTensorMode; NVML used: the whole process (context included).")
EOF
echo "done in $(( $(date +%s) - START )) s; results in $OUT" >&2
