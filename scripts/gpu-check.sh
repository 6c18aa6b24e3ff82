#!/usr/bin/env bash
# The GPU check of issue 25, for the lent machine as it is (docs/gpu-check.md): python3 3.12 with its own torch,
# no pydantic, no network.  About 5-6 minutes on an H100; at most 3 files in OUT:
#   summary.txt   the table: every figure, its criterion, PASS / FAIL / info
#   figures.json  the same with every number, the step timings and the environment
#   work.tar.gz   the rest: each memplan call's JSON and log
#
# Usage: scripts/gpu-check.sh [OUT]            (default: $OUT, else ./gpu-check-<UTC time>)
#        scripts/gpu-check.sh --dry [OUT]      (or MEMPLAN_GPU_CHECK_DRY=1: every step on the CPU, tiny models)
# Environment: PYTHON (default python3), MEMPLAN_GPU_CHECK_BUDGET (seconds for all steps, default 340),
#              MEMPLAN_GPU_CHECK_ONLY (comma-separated steps: env,bench,profiles,hf,distributed,pytest,system).
# pydantic: when `python3 -c 'import pydantic'` fails, the wheels in .whl/ (scripts/gpu-wheels.sh, carried with the
# tree) are installed with `pip install --no-index --no-deps --target WORK/site` and put on PYTHONPATH.
# memplan itself runs from this tree (PYTHONPATH), nothing installed.
# No `set -e`: every step records its result or its error, and the table is printed whatever happened.
set -u

DRY=""
if [[ "${1:-}" == "--dry" ]]; then DRY="--dry"; shift; fi
[[ "${MEMPLAN_GPU_CHECK_DRY:-}" == "1" ]] && DRY="--dry"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-${OUT:-$HERE/gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/memplan-gpu-check.XXXXXX")"
PY="${PYTHON:-python3}"
mkdir -p "$OUTDIR" "$WORK"
START=$(date +%s)

{
  echo "started $(date -u +%FT%TZ) on $(hostname); python: $(command -v "$PY")"
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)' 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2
} > "$WORK/environment.txt"
cat "$WORK/environment.txt" >&2

if ! "$PY" -c 'import pydantic' 2>/dev/null; then
  if ls "$HERE"/.whl/*.whl >/dev/null 2>&1; then
    echo "gpu-check: pydantic missing; installing the carried wheels into $WORK/site" >&2
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
      "$HERE"/.whl/*.whl > "$WORK/pip.log" 2>&1 || echo "gpu-check: wheel install failed (see pip.log)" >&2
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu-check: pydantic missing and no .whl/ carried (run scripts/gpu-wheels.sh, carry .whl): the memplan steps will fail" >&2
  fi
fi
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c 'import pydantic, memplan.catalog as c; print("pydantic", pydantic.VERSION, "profiles", c.profiles_dir())' \
  >> "$WORK/environment.txt" 2>&1

ONLY=()
[[ -n "${MEMPLAN_GPU_CHECK_ONLY:-}" ]] && ONLY=(--only "$MEMPLAN_GPU_CHECK_ONLY")
"$PY" "$HERE/scripts/gpu_check.py" run --work "$WORK" --out "$OUTDIR" $DRY \
  --budget "${MEMPLAN_GPU_CHECK_BUDGET:-340}" ${ONLY[@]+"${ONLY[@]}"}
rc=$?
if [[ ! -f "$OUTDIR/summary.txt" ]]; then  # the driver itself broke: still three files at most, saying so
  echo "gpu-check: the driver exited $rc without a summary; see work.tar.gz" > "$OUTDIR/summary.txt"
  tar -czf "$OUTDIR/work.tar.gz" -C "$(dirname "$WORK")" "$(basename "$WORK")" 2>/dev/null
fi
echo "gpu-check: $(( $(date +%s) - START )) s in all; results in $OUTDIR" >&2
exit $rc
