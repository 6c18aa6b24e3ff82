"""What must hold of a case's outcome, whatever the input (issue 13):

- no traceback (no exception out of `main`), no hang, and exit status 0 or 2 (130 only for Ctrl-C);
- exit 2: exactly one `memplan: error: ...` line on stderr (other stderr lines only memplan's own progress
  lines), nothing on stdout, no pydantic or Python wording in the message;
- exit 0: the output makes sense: --json parses; every byte field (per_gpu.*, cpu.*, nvme.*, components[].bytes,
  timeline[].bytes.*, vllm's byte fields, any `*_bytes`) is a non-negative integer; per_gpu.total >=
  model_states; fits == (required <= gpu_memory) for a training estimate on a GPU; no nan/inf in a table;
- what a case wrote: the file asked for and nothing else, never a temporary file left behind, an existing file
  untouched unless --force;
- across runs: more GPUs under ZeRO-3 never increase the per-GPU model states; the micro-batch (sequence) that
  --max-micro-batch (--max-seq) reports fits and the next one does not.
"""
from __future__ import annotations

import json
import math
import re

from tests.fuzz.runner import CaseRun, Outcome

ERROR_PREFIX = "memplan: error: "
# wording that means an internal error leaked into the message instead of a sentence for the user
LEAKS = ["validation error", "Input should be", "For further information visit", "[type=", "Errno",
         "object has no attribute", "NoneType", "unhashable type", "unsupported operand", "<class ", "Traceback",
         "KeyError", "IndexError", "TypeError", "ValueError", "AttributeError", "ZeroDivisionError", " at 0x",
         "takes 0 positional", "missing 1 required", "RecursionError", "not subscriptable", "OverflowError"]
MAX_ERROR_CHARS = 700
NONSENSE_IN_TABLE = re.compile(r"(?<![\w.+-])(nan|inf(inity)?)(?![\w-])|(?<![\w.+-])-\d[\d,.]*\s?(GiB|GB|MiB|"
                               r"B/param|days|hours)\b", re.IGNORECASE)
BYTE_DICTS = ("per_gpu", "cpu", "nvme")
VLLM_BYTES = ("total_memory", "requested", "weights", "peak_activation", "profile_peak", "non_torch", "cudagraph",
              "kv_bytes_per_token", "bytes_per_block", "kv_cache_pool", "num_gpu_blocks", "gpu_kv_cache_tokens")
MAX_PARAMETERS = 10**15  # the largest count memplan accepts (spec/units.py parse_count): anything above is nonsense
JSON_COMMANDS = {"estimate", "models", "gpus", "interconnects", "time", "plan", "profile", "bench"}
WRITE_FLAGS = ("--out", "--plot", "--save-setup", "--snapshot")


def problems(run: CaseRun) -> list[str]:
    return [p if len(p) < 600 else p[:400] + f"... ({len(p)} characters)" for p in _problems(run)]


def _problems(run: CaseRun) -> list[str]:
    o, case = run.outcome, run.case
    if o.timed_out:
        return [f"hang: no answer within {case.timeout:g} s (at {o.where()})"]
    if o.escaped is not None:
        last = o.trace.strip().splitlines()[-1] if o.trace.strip() else repr(o.escaped)
        return [f"traceback: {last} (at {o.where()})"]
    found: list[str] = []
    if "Traceback (most recent call last)" in o.out + o.err:
        found.append("a traceback printed")
    if o.code == 2:
        found += _error_output(o)
    elif o.code == 0:
        found += _success_output(run)
    else:
        found.append(f"exit status {o.code} (expected 0 or 2); stderr: {o.err.strip()[-300:]!r}")
    found += _writes(run)
    return found


# ---- exit 2 ----------------------------------------------------------------------------------------------------
def _error_output(o: Outcome) -> list[str]:
    found = []
    lines = o.err.strip().splitlines()
    errors = [x for x in lines if x.startswith(ERROR_PREFIX)]
    if len(errors) != 1:
        found.append(f"exit 2 with {len(errors)} error lines; stderr: {o.err.strip()[-400:]!r}")
    others = [x for x in lines if not x.startswith(ERROR_PREFIX) and not re.match(r"^memplan( \w+)?: ", x)]
    if others:
        found.append(f"exit 2 with other stderr lines: {others[:3]!r}")
    if o.out.strip():
        found.append(f"exit 2 with stdout: {o.out.strip()[:200]!r}")
    for line in errors:
        leaked = [w for w in LEAKS if w in line]
        if leaked:
            found.append(f"error wording leaks {leaked}: {line[:400]!r}")
        if len(line) > MAX_ERROR_CHARS:
            found.append(f"error line of {len(line)} characters: {line[:200]!r}...")
        if line.strip() == ERROR_PREFIX.strip():
            found.append("empty error message")
    return found


# ---- exit 0 ----------------------------------------------------------------------------------------------------
def _success_output(run: CaseRun) -> list[str]:
    case, o = run.case, run.outcome
    args = case.args
    if any(a in ("-h", "--help", "--version") for a in args):
        return [] if o.out.strip() else ["--help/--version printed nothing"]
    if not o.out.strip():
        return ["exit 0 with nothing on stdout"]
    if "--json" not in args or case.command not in JSON_COMMANDS:
        m = NONSENSE_IN_TABLE.search(o.out)
        return [f"nonsense in the table: {o.out[max(0, m.start() - 80):m.end() + 40]!r}"] if m else []
    try:
        data = json.loads(o.out)
    except ValueError as exc:
        return [f"--json output does not parse: {exc}; starts {o.out[:200]!r}"]
    found = list(_numbers(data))
    if case.command == "estimate":
        if isinstance(data, dict) and "strategies" in data:
            for s in data["strategies"]:
                found += [f"strategy {s.get('strategy')}: {p}" for p in _training(s["estimate"])]
        elif isinstance(data, dict) and data.get("engine") in ("vllm", "hf"):
            found += _inference(data)
            found += _inference_across_runs(run, data)
        else:
            found += _training(data)
            found += _across_runs(run, data)
    elif case.command == "time" and isinstance(data, dict):
        found += _time(data)
    elif case.command == "plan" and isinstance(data, dict):
        found += _plan(data)
    elif case.command == "profile":
        for part in ("measured", "estimated"):
            for k, v in (data.get(part) or {}).items() if isinstance(data, dict) else []:
                if k != "peak_phase" and not _byte(v):
                    found.append(f"{part}.{k} = {v!r}: not a non-negative integer")
    return found


def _byte(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _numbers(data, where: str = ""):
    """Every number finite; every `bytes`/`*_bytes` field a non-negative integer; times and costs >= 0."""
    stack = [(where, data)]
    while stack:
        path, v = stack.pop()
        key = path.rsplit(".", 1)[-1]
        if isinstance(v, dict):
            stack.extend((f"{path}.{k}", x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((f"{path}[{i}]", x) for i, x in enumerate(v))
        elif isinstance(v, float) and not math.isfinite(v):
            yield f"{path} = {v}"
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            if (key == "bytes" or key.endswith("_bytes")) and ".setup." not in path + "." and not _byte(v):
                yield f"{path} = {v!r}: a byte count must be a non-negative integer"
            elif re.search(r"seconds|days|hours|cost|price|usd|tflops|flops|gbps|bandwidth", key) and v < 0:
                yield f"{path} = {v!r}: negative"


def _training(est: dict) -> list[str]:
    found = []
    g = est.get("per_gpu") or {}
    for part in BYTE_DICTS:
        for k, v in (est.get(part) or {}).items():
            if not _byte(v):
                found.append(f"{part}.{k} = {v!r}: not a non-negative integer")
    for i, c in enumerate(est.get("components") or []):
        if not _byte(c.get("bytes")):
            found.append(f"components[{i}] {c.get('name')!r}.bytes = {c.get('bytes')!r}")
    for ph in est.get("timeline") or []:
        for k, v in ph.get("bytes", {}).items():
            if not _byte(v):
                found.append(f"timeline[{ph.get('name')}].bytes.{k} = {v!r}")
    if found:
        return found
    if g["total"] < g["model_states"]:
        found.append(f"per_gpu.total {g['total']} < model_states {g['model_states']}")
    parts = g["weights"] + g["gradients"] + g["master_weights"] + g["optimizer_states"]
    if g["model_states"] != parts:
        found.append(f"per_gpu.model_states {g['model_states']} != weights + gradients + master + states {parts}")
    if g["required"] != g["peak_allocated"] + g["overheads"]:
        found.append(f"per_gpu.required {g['required']} != peak_allocated + overheads")
    if est.get("gpu") is not None:
        mem = est.get("gpu_memory")
        if not _byte(mem) or mem == 0:
            found.append(f"gpu_memory = {mem!r}")
        elif est.get("fits") != (g["required"] <= mem):
            found.append(f"fits = {est.get('fits')} but required {g['required']:,} vs gpu_memory {mem:,}")
    if not isinstance(est.get("parameters"), int) or not 0 < est["parameters"] <= MAX_PARAMETERS:
        found.append(f"parameters = {est.get('parameters')!r} (memplan refuses counts above 1e15)")
    return found


def _inference(est: dict) -> list[str]:
    found = []
    for k, v in (est.get("per_gpu") or {}).items():
        if not _byte(v):
            found.append(f"per_gpu.{k} = {v!r}: not a non-negative integer")
    for i, c in enumerate(est.get("components") or []):
        if not _byte(c.get("bytes")):
            found.append(f"components[{i}] {c.get('name')!r}.bytes = {c.get('bytes')!r}")
    for k, v in (est.get("weights") or {}).items():
        if k in ("total", "quantized", "unquantized", "buffers", "experts") and not _byte(v):
            found.append(f"weights.{k} = {v!r}")
    for k in ("kv_bytes_per_token", "kv_tokens", "context", "batch"):
        if est.get(k) is not None and not _byte(est[k]):
            found.append(f"{k} = {est[k]!r}")
    vllm = est.get("vllm")
    if vllm:
        found += _kv_blocks(vllm)
        for k in VLLM_BYTES:
            if vllm.get(k) is not None and not _byte(vllm[k]):
                found.append(f"vllm.{k} = {vllm[k]!r}: not a non-negative integer")
        for i, kind in enumerate(vllm.get("layer_kinds") or []):
            for k in ("page_size_bytes", "bytes_per_token_per_layer", "max_memory_usage_bytes"):
                if kind.get(k) is not None and not _byte(kind[k]):
                    found.append(f"vllm.layer_kinds[{i}].{k} = {kind[k]!r}")
        if vllm.get("starts") and not _byte(vllm.get("kv_cache_available")):
            found.append(f"vLLM starts with kv_cache_available = {vllm.get('kv_cache_available')!r}")
        if est.get("fits") and not vllm.get("starts"):
            found.append("fits although vLLM does not start")
        if not vllm.get("starts") and not vllm.get("refusal"):
            found.append("vLLM does not start and no refusal says why")
    elif est.get("gpu") is not None and est.get("engine") == "hf":
        g, mem = est["per_gpu"], est.get("gpu_memory")
        if _byte(mem) and est.get("fits") != (g["required"] <= mem):
            found.append(f"fits = {est.get('fits')} but required {g['required']:,} vs gpu_memory {mem:,}")
    if est.get("gpu") is not None and est.get("fits") and est["per_gpu"]["required"] > (est.get("gpu_memory") or 0):
        found.append(f"fits although required {est['per_gpu']['required']:,} > gpu_memory {est.get('gpu_memory')}")
    return found


def _close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def _time(t: dict) -> list[str]:
    """Days, GPU-hours and cost follow from the step: seconds = steps x step, days = seconds / 86400, GPU-hours =
    seconds x GPUs / 3600, cost = GPU-hours x price; tokens/s = tokens per step / step; MFU <= HFU <= 1."""
    found = []
    try:
        gpus = t["layout"]["gpus"]
        step, steps = t["step_seconds"], t["steps"]
        checks = [("seconds", t["seconds"], steps * step), ("days", t["days"], t["seconds"] / 86400),
                  ("gpu_hours", t["gpu_hours"], steps * step * gpus / 3600),
                  ("tokens_per_second", t["tokens_per_second"], t["tokens_per_step"] / step)]
        if t.get("cost") is not None:
            checks.append(("cost", t["cost"], t["gpu_hours"] * t["price_per_hour"]))
    except (KeyError, TypeError, ZeroDivisionError) as exc:
        return [f"time output lacks a field the invariants read: {exc!r}"]
    for name, got, want in checks:
        if not _close(got, want, 1e-6):
            found.append(f"time: {name} = {got!r} but the step says {want!r}")
    if not step > 0 or steps < 1:
        found.append(f"time: step {step!r} s x {steps!r} steps")
    for key in ("mfu", "hfu"):
        if not 0 < t.get(key, 0) <= 1 + 1e-9:
            found.append(f"time: {key} = {t.get(key)!r} (over 100% of the dense peak, or none)")
    return found


def _plan(p: dict) -> list[str]:
    """Each candidate: days and GPU-hours from its step and the plan's steps, cost from the price, MFU in (0, 1],
    fits == required <= GPU memory; the candidates ranked in order."""
    found = []
    steps, price = p.get("steps"), p.get("price_per_hour")
    for c in p.get("candidates") or []:
        L = c.get("layout") or {}
        step = c.get("step_seconds")
        if not isinstance(step, (int, float)) or step <= 0 or not isinstance(steps, int) or steps < 1:
            found.append(f"plan #{c.get('rank')}: step {step!r} x steps {steps!r}")
            continue
        for name, got, want in (("days", c["days"], steps * step / 86400),
                                ("gpu_hours", c["gpu_hours"], steps * step * L.get("gpus", 0) / 3600)):
            if not _close(got, want, 1e-6):
                found.append(f"plan #{c['rank']}: {name} = {got!r} but the step says {want!r}")
        if c.get("cost") is not None and price is not None and not _close(c["cost"], c["gpu_hours"] * price, 1e-6):
            found.append(f"plan #{c['rank']}: cost = {c['cost']!r}, not GPU-hours x price")
        if not 0 < c.get("mfu", 0) <= 1 + 1e-9:
            found.append(f"plan #{c['rank']}: mfu = {c.get('mfu')!r}")
        if c.get("fits") != (c.get("memory_required_bytes", 0) <= p.get("gpu_memory_bytes", 0)):
            found.append(f"plan #{c['rank']}: fits = {c.get('fits')} but required {c.get('memory_required_bytes')} "
                         f"vs {p.get('gpu_memory_bytes')}")
    return found


def _kv_blocks(vllm: dict) -> list[str]:
    """The KV pool is whole blocks (pool = blocks x bytes per block, within what was available); for a model of
    full-attention layers only, in one group, at a max_model_len of whole blocks, the tokens vLLM logs are
    blocks x block size (hybrid and windowed models log concurrency x max_model_len in newer versions)."""
    found = []
    if not vllm.get("starts"):
        return found
    blocks, size, per_block = vllm.get("num_gpu_blocks"), vllm.get("block_size"), vllm.get("bytes_per_block")
    if not all(isinstance(x, int) for x in (blocks, size, per_block)):
        return [f"vllm: num_gpu_blocks {blocks!r}, block_size {size!r}, bytes_per_block {per_block!r}"]
    if vllm.get("kv_cache_pool") != blocks * per_block:
        found.append(f"vllm: kv_cache_pool {vllm.get('kv_cache_pool')!r} != {blocks} blocks x {per_block} B")
    if isinstance(vllm.get("kv_cache_available"), int) and blocks * per_block > vllm["kv_cache_available"]:
        found.append(f"vllm: {blocks} blocks x {per_block} B exceed kv_cache_available {vllm['kv_cache_available']}")
    kinds = vllm.get("layer_kinds") or []
    full = len(kinds) == 1 and kinds[0].get("window") is None and kinds[0].get("kind") in ("full", "attention",
                                                                                           "mla", "full_attention")
    mml = vllm.get("max_model_len")
    if full and len(vllm.get("groups") or [1]) == 1 and isinstance(mml, int) and mml % size == 0 \
            and vllm.get("gpu_kv_cache_tokens") != blocks * size:
        found.append(f"vllm: GPU KV cache {vllm.get('gpu_kv_cache_tokens')!r} tokens != {blocks} blocks x {size}")
    return found


# ---- across runs -----------------------------------------------------------------------------------------------
def _without(args: list[str], *flags: str, valued: bool = True) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in flags:
            skip = valued
            continue
        out.append(a)
    return out


def _across_runs(run: CaseRun, est: dict) -> list[str]:
    found = []
    setup = est.get("setup") or {}
    layout = setup.get("layout") or {}
    args = [a for a in run.case.args if a not in ("--max-micro-batch", "--max-seq")]
    args = _without(args, "--save-setup", "--plot")
    if layout.get("zero") == 3 and est.get("max_micro_batch") is None and est.get("max_seq") is None:
        gpus = layout["gpus"]
        o = run.rerun(_without(args, "-n", "--gpus") + ["-n", str(2 * gpus)])
        if o.code == 0 and not o.escaped:
            more = json.loads(o.out)["per_gpu"]["model_states"]
            if more > est["per_gpu"]["model_states"]:
                found.append(f"ZeRO-3: {2 * gpus} GPUs hold {more:,} B of model states per GPU, more than "
                             f"{est['per_gpu']['model_states']:,} on {gpus}")
    arch = (setup.get("model") or {}).get("architecture") or {}
    learned = (arch.get("embeddings") or {}).get("learned_positions")
    # where the searches stop (memory/search.py): the answer is then the ceiling, not a memory boundary
    ceilings = {"max_micro_batch": 1 << 20, "max_seq": arch.get("max_positions") if learned else 1 << 22}
    for key, flag in (("max_micro_batch", "-b"), ("max_seq", "-s")):
        n = est.get(key)
        if not isinstance(n, int) or n < 1:
            continue
        base = _without(args, flag, "--micro-batch" if flag == "-b" else "--seq")
        at = run.rerun(base + [flag, str(n)])
        if at.code != 0 or at.escaped:
            found.append(f"--{key.replace('_', '-')} said {n}, but {flag} {n} exits {at.code}: {at.err.strip()!r}")
            continue
        if not json.loads(at.out).get("fits"):
            found.append(f"--{key.replace('_', '-')} said {n}, but {flag} {n} does not fit")
        if n >= (ceilings[key] or 0):
            continue
        above = run.rerun(base + [flag, str(n + 1)])
        if above.code == 0 and not above.escaped and json.loads(above.out).get("fits"):
            found.append(f"--{key.replace('_', '-')} said {n}, but {flag} {n + 1} fits too")
    return found


def _inference_across_runs(run: CaseRun, est: dict) -> list[str]:
    """--max-batch (--max-context) said N: --batch N (--context N) fits, N + 1 does not (below the caps)."""
    found = []
    vllm = est.get("vllm") or {}
    for key, flag, cap in (("max_batch", "--batch", vllm.get("max_num_seqs")),
                           ("max_context", "--context", ((est.get("setup") or {}).get("model") or {})
                            .get("architecture", {}) and est["setup"]["model"]["architecture"].get("max_positions"))):
        n = est.get(key)
        if not isinstance(n, int) or n < 1:
            continue
        args = _without([a for a in run.case.args if a not in ("--max-batch", "--max-context")], flag)
        if flag == "--context":
            args = _without(args, "--prompt", "--output", "--max-model-len")
        for value, should_fit in ((n, True), (n + 1, False)):
            if not should_fit and cap is not None and n >= cap:
                continue
            o = run.rerun(args + [flag, str(value)])
            if o.code != 0 or o.escaped:
                if should_fit:
                    found.append(f"--{key.replace('_', '-')} said {n}, but {flag} {n} exits {o.code}: "
                                 f"{o.err.strip()[-200:]!r}")
                continue
            fits = json.loads(o.out).get("fits")
            if fits != should_fit:
                found.append(f"--{key.replace('_', '-')} said {n}, but {flag} {value} "
                             + ("does not fit" if should_fit else "fits too"))
    return found


# ---- files written -------------------------------------------------------------------------------------------------
def _targets(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a in WRITE_FLAGS]


def _writes(run: CaseRun) -> list[str]:
    found = []
    before, after = run.before, run.after
    new = {k for k in after if k not in before}
    leftovers = [k for k in after if re.search(r"(^|/)\.[^/]*\.memplan-[^/]*\.tmp$", k)]
    if leftovers:
        found.append(f"temporary file(s) left behind: {leftovers}")
    targets = _targets(run.case.args)
    # a write goes to the path, or (a symlink with --force) to the file it names, or a free name beside it
    expected_prefixes = {t.rsplit(".", 1)[0] for t in targets} | {"target-", "gone-"}
    unexpected = [k for k in new - set(leftovers)
                  if not any(k.startswith(p) or k.split("/")[-1].startswith(p.split("/")[-1])
                             for p in expected_prefixes) and not any(t.startswith(k + "/") for t in targets)]
    if unexpected:
        found.append(f"wrote file(s) nobody asked for: {sorted(unexpected)[:5]}")
    kept_beside = "this result is in" in run.outcome.err  # a target that appeared mid-run: the result is kept
    if run.outcome.code != 0 and not kept_beside:
        written = sorted(k for k in new - set(leftovers) if isinstance(after[k], bytes))
        if written:
            found.append(f"exit {run.outcome.code} but file(s) written: {written[:5]}")
    for t in targets:
        was, now = before.get(t), after.get(t)
        if run.outcome.code != 0:
            if was is not None and was != now:  # a failed run changes nothing that was there
                found.append(f"exit {run.outcome.code} but {t} changed")
            continue
        if isinstance(was, bytes) and was != now and "--force" not in run.case.args:
            found.append(f"{t} existed and was overwritten without --force")
        if now is None and was is None and "--find-max-batch" not in run.case.args:
            found.append(f"exit 0 but {t} was not written")
        elif isinstance(now, bytes) and not now:
            found.append(f"exit 0 but {t} is empty")
    return found
