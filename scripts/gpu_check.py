#!/usr/bin/env python3
"""The GPU check of issue 25: every figure the estimate needs from a real GPU, with pass/fail, in one call.

    python3 scripts/gpu_check.py run --work DIR --out OUT [--dry] [--budget SECONDS]
    python3 scripts/gpu_check.py step NAME --work DIR [--dry]      (one step; `run` starts each this way)

scripts/gpu-check.sh prepares the interpreter (pydantic from carried wheels) and calls `run`.  Each step runs in
its own process with its own timeout, writes <work>/results/<step>.json and its log to <work>/logs/; a step that
fails or times out is a row saying so, never the end of the check.  `run` then writes at most three files to OUT:
summary.txt (the table), figures.json (every figure with its criterion and pass/fail) and work.tar.gz (the rest).

--dry (or MEMPLAN_GPU_CHECK_DRY=1) runs every step's code path on the CPU: tiny models, cpu/fake devices, small
matrices; thresholds are then reported but not judged (pass is null).  It is what CI runs (tests/test_gpu_check.py).

This driver itself needs only the standard library: it must still print its table when memplan cannot import.
Constants and where they come from:
  - 790 TFLOP/s: bf16 8192^3 measured on this workplace's H100 and H200 (769-798; /work/.library/device/KINDS.md,
    2026-10/11); the check asks >= 90% of it.
  - 3.0 TB/s (H100) / 4.3 TB/s (H200): device-to-device copy, read + write, measured there (KINDS.md); >= 85%.
  - do_bench: triton.testing.do_bench (triton/testing.py, 3.x: warm-up 25 ms, 100 ms of repeats, L2 cleared
    before each by zeroing a 256 MB buffer), median; memplan bench must agree within 5%.
  - 3%: the estimate against torch.cuda.max_memory_allocated of the same step (issue 25).
  - allocator assumption: profiles/overheads/cuda.json allocator_reserve_fraction (reserved - allocated = 5%).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # memplan from this tree (scripts/gpu-check.sh also sets PYTHONPATH)
    sys.path.insert(0, str(ROOT))
MEASURED_BF16_TFLOPS = 790.0
COPY_TBPS = {"H100": 3.0, "H200": 4.3}
ESTIMATE_TOLERANCE_PERCENT = 3.0

# the reference ~1B decoder (980,494,336 parameters with GQA 16/8): Llama-style, seq 2048
MODEL_1B = ["1", "--layers", "18", "--hidden", "2048", "--heads", "16", "--ffn", "5632", "--vocab", "32000",
            "--max-positions", "2048", "--mlp", "swiglu", "--norm", "rmsnorm", "--seq", "2048"]
MODEL_TINY = ["1", "--layers", "2", "--hidden", "64", "--heads", "4", "--ffn", "160", "--vocab", "512",
              "--max-positions", "64", "--mlp", "swiglu", "--norm", "rmsnorm", "--seq", "32"]
KV = {"gqa": "8", "mha": "16"}  # of 16 heads; the tiny model: 2 and 4 of 4
KV_TINY = {"gqa": "2", "mha": "4"}
BATCHES = {"bf16-mixed": (2, 8), "fp32": (1, 2)}  # fp32 b2: the math path of fp32 GQA (torch < 2.13) must fit 80 GB
DRY_PROFILES = {("gqa", "bf16-mixed", 8)}  # dry: each code path once (the other combinations differ in flags only)

# step name -> (timeout s on a GPU, timeout s dry); run in this order, within the overall budget
STEPS = {"env": (90, 60), "bench": (120, 60), "profiles": (240, 120), "hf": (150, 90), "distributed": (150, 120),
         "pytest": (150, 120), "system": (150, 90)}


# ---------------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------------
class Figures:
    """What a step found: rows of (name, value, unit, criterion, pass); pass is None for information only."""

    def __init__(self, step: str, dry: bool, path: Path | None = None) -> None:
        self.step, self.dry, self.rows, self.info, self.path = step, dry, [], {}, path

    def save(self) -> None:
        """Written after every figure: a step stopped at its timeout keeps what it measured."""
        if self.path is not None:
            self.path.write_text(json.dumps({"rows": self.rows, "info": self.info}, indent=1, default=str))

    def add(self, name: str, value, unit: str = "", criterion: str = "", ok: bool | None = None,
            note: str = "") -> None:
        if self.dry and ok is not None:  # dry: the figures of a CPU, judged by nothing
            note, ok = (note + "; " if note else "") + f"dry: {'would pass' if ok else 'would fail'}", None
        self.rows.append({"step": self.step, "name": name, "value": value, "unit": unit, "criterion": criterion,
                          "pass": ok, "note": note})
        self.save()

    def error(self, name: str, message: str) -> None:
        self.rows.append({"step": self.step, "name": name, "value": None, "unit": "", "criterion": "runs",
                          "pass": False, "note": message})
        self.save()


def one_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").strip().splitlines() if x.strip()]
    errors = [x for x in lines if "error" in x.lower() or "Error" in x]
    return (errors[-1] if errors else lines[-1] if lines else "")[:300]


def slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in label)


def run_group(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """subprocess.run in a session of its own: at the timeout the whole group goes (a memplan run's ranks and
    workers too, which would otherwise keep the GPU busy under the next step)."""
    with subprocess.Popen(cmd, start_new_session=True, **kw) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                proc.kill()
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def memplan(args: list[str], work: Path, name: str, timeout: float) -> tuple[dict | None, str]:
    """`python3 -m memplan ARGS --json`; (the JSON, '') or (None, the one-line reason)."""
    name = slug(name)
    log = work / "logs" / f"{name}.log"
    try:
        p = run_group([sys.executable, "-m", "memplan", *args], timeout, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE, text=True, cwd=ROOT)
    except subprocess.TimeoutExpired:
        log.write_text(f"timed out after {timeout:.0f} s\n")
        return None, f"timed out after {timeout:.0f} s"
    log.write_text(f"$ memplan {' '.join(args)}\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}\n")
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {one_line(p.stderr or p.stdout)}"
    try:
        data = json.loads(p.stdout)
    except ValueError:
        return None, "no JSON on stdout"
    (work / "raw" / f"{name}.json").write_text(p.stdout)
    return data, ""


def gpu_class(name: str) -> str | None:
    return next((k for k in COPY_TBPS if k in name.upper()), None)


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------------
# steps
# ---------------------------------------------------------------------------------------------------------
def step_env(f: Figures, work: Path) -> None:
    import torch

    from memplan.measure.cuda import library_versions, nvml_info

    cuda = torch.cuda.is_available() and not f.dry
    v = library_versions()
    for k, x in v.items():
        f.add(k, x)
    f.add("device", device_name())
    if cuda:
        f.add("capability", "%d.%d" % torch.cuda.get_device_capability())
        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
        nv = nvml_info(torch.cuda.current_device())
        f.add("driver", nv.get("driver"), note=nv.get("note", ""))
        f.add("NVML sees this process", nv.get("used") is not None, "", "its PID in NVML's process list",
              nv.get("used") is not None, note=nv.get("note", ""))
        # the CUDA context: device memory outside torch's allocator right after the first allocation
        free, total = torch.cuda.mem_get_info()
        ctx = (nv["used"] if nv.get("used") is not None else total - free) - torch.cuda.memory_reserved()
        f.add("CUDA context", round(ctx / 2**20, 1), "MiB", note="per-process NVML" if nv.get("used") is not None
              else "device-wide (total - free): this machine runs nothing else")
        f.info["context_bytes"] = ctx
        # cuBLAS workspace: allocated through torch's caching allocator on the first matmul of a handle/stream
        a = torch.randn(1024, 1024, device="cuda", dtype=torch.bfloat16)
        before = torch.cuda.memory_allocated()
        c = a @ a
        torch.cuda.synchronize()
        ws = torch.cuda.memory_allocated() - before - c.numel() * c.element_size()
        f.add("cuBLAS workspace (in memory_allocated)", round(ws / 2**20, 2), "MiB",
              note="profiles/overheads/cuda.json assumes 32 MiB on sm90 (CUBLAS_WORKSPACE_CONFIG :4096:8), "
                   "counted outside peak_allocated")
        f.info["cublas_workspace_bytes"] = ws
        free2, _ = torch.cuda.mem_get_info()
        f.add("outside the allocator after cuBLAS", round(((total - free2) - torch.cuda.memory_reserved()) / 2**20, 1),
              "MiB", note="context + cuBLAS kernels, device-wide")
    sdpa_kernels(f, "cuda" if cuda else "cpu")


def sdpa_kernels(f: Figures, device: str) -> None:
    """Which sdpa kernel runs for the three cases the estimate distinguishes, against the expected one, and the
    transient bytes its backward allocates (cuDNN's workspace among them) next to flash's."""
    import torch
    import torch.nn.functional as F

    from memplan.measure.cuda import AttentionSpy, expected_sdpa_kernels

    b, h, s, d = (4, 16, 2048, 128) if device == "cuda" else (1, 4, 64, 16)
    cases = {"bf16 causal": (torch.bfloat16, h, None), "bf16 with mask": (torch.bfloat16, h, True),
             "fp32 GQA causal": (torch.float32, h // 2, None)}
    for label, (dtype, kv, masked) in cases.items():
        q = torch.randn(b, h, s, d, device=device, dtype=dtype, requires_grad=True)
        k, v = (torch.randn(b, kv, s, d, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
        mask = torch.ones(s, s, device=device, dtype=torch.bool).tril() if masked else None
        spy = AttentionSpy()
        peak = None
        with spy:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                                 enable_gqa=kv != h)
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            out.sum().backward()
            if device == "cuda":
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated() - base
        # the math path is CompositeImplicitAutograd (decomposed into bmm/softmax above any dispatch mode): no
        # fused sdpa op dispatched means it ran
        ran = ",".join(sorted(spy.kernels)) or "math"
        want = expected_sdpa_kernels(device, dtype, gqa=kv != h, mask=masked is not None)
        f.add(f"sdpa kernel, {label}", ran, "", "one of " + "/".join(want), ran in want)
        if peak is not None:
            grads = sum(t.numel() * t.element_size() for t in (q, k, v))
            f.add(f"sdpa backward transients beyond dq/dk/dv, {label} ({ran})", round((peak - grads) / 2**20, 1),
                  "MiB", note=f"b{b} h{h}/{kv} s{s} d{d}; cuDNN's backward workspace shows here")
        del q, k, v, out


def do_bench_tflops(n: int, dtype: str, device: str) -> float | None:
    """The same GEMM as memplan bench, timed by triton.testing.do_bench (median), where triton is there."""
    import torch

    try:
        from triton.testing import do_bench
    except ImportError:
        return None
    if device != "cuda":
        return None
    t = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a, b = torch.randn(n, n, device="cuda", dtype=t), torch.randn(n, n, device="cuda", dtype=t)
    ms = do_bench(lambda: a @ b, warmup=25, rep=100, return_mode="median")
    return 2 * n ** 3 / (ms / 1e3) / 1e12


def step_bench(f: Figures, work: Path) -> None:
    dry = f.dry
    args = (["--device", "cpu", "--dtypes", "fp32,bf16", "--size", "256", "--repeats", "2"] if dry else
            ["--device", "cuda", "--repeats", "10"])
    out = work / "raw" / "bench-record.json"
    data, err = memplan(["bench", *args, "--out", str(out), "--force", "--json"], work, "bench", 100 if not dry else 50)
    if data is None:
        f.error("memplan bench", err)
        return
    name = data["device_name"]
    cls = gpu_class(name)
    got = {m["dtype"]: m for m in data["matmul"]}
    floor = 0.9 * MEASURED_BF16_TFLOPS
    for dt in ("bf16", "fp16", "tf32", "fp32", "fp8"):
        m = got.get(dt)
        if m is None:
            if not dry or dt in ("bf16", "fp32"):
                f.error(f"{dt} GEMM", "not measured: " + "; ".join(data["notes"]))
            continue
        judged = dt in ("bf16", "fp16") and (cls is not None or dry)
        f.add(f"{dt} GEMM {m['n']}^3", round(m["achieved_tflops"], 1), "TFLOP/s",
              f">= {floor:.0f} (90% of {MEASURED_BF16_TFLOPS:.0f})" if judged else "recorded",
              m["achieved_tflops"] >= floor if judged else None,
              note=f"{m['fraction_of_peak']:.0%} of the profile's dense peak" if m.get("fraction_of_peak") else "")
        if dt in ("bf16", "fp16"):
            ref = do_bench_tflops(m["n"], dt, data["device"])
            if ref is not None:
                ratio = m["achieved_tflops"] / ref
                f.add(f"{dt} memplan bench / do_bench", round(ratio, 3), "", "within 5%", abs(ratio - 1) <= 0.05,
                      note=f"do_bench {ref:.1f} TFLOP/s")
            elif not dry:
                f.add(f"{dt} memplan bench / do_bench", None, "", "within 5%", None, note="triton not importable")
    bw = data.get("bandwidth")
    if bw:
        want = COPY_TBPS.get(cls or "", None)
        f.add("HBM copy (read + write)", round(bw["achieved_gbps"] / 1e3, 3), "TB/s",
              f">= {0.85 * want:.2f} (85% of {want})" if want else "recorded",
              bw["achieved_gbps"] / 1e3 >= 0.85 * want if want else None)
    # the fix of issue 25: a size not divisible by 16 rounds fp8 up, and keeps the dtypes measured before it
    if dry:
        import memplan.measure.bench as bench

        bench.fp8_supported = lambda _d: True  # the CPU's _scaled_mm stands in for the GPU's
        r = bench.run_bench("cpu", ("bf16", "fp8"), n=72, repeats=1, copy_bytes=2**20)
        dts = [(m.dtype, m.n) for m in r.matmul]
    else:
        small, err = memplan(["bench", "--device", "cuda", "--dtypes", "bf16,fp8", "--size", "1000", "--repeats",
                              "2", "--json"], work, "bench-size-1000", 60)
        dts = [(m["dtype"], m["n"]) for m in small["matmul"]] if small else err
    f.add("bench --size 1000 --dtypes bf16,fp8", str(dts), "", "both measured, fp8 at 1008 (dry: 72 -> 80)",
          isinstance(dts, list) and len(dts) == 2)


def profile_args(model: str, kv: str, recipe: str, batch: int, device: str, dry: bool, source: str = "reference",
                 extra: tuple[str, ...] = ()) -> list[str]:
    base = MODEL_TINY if dry else MODEL_1B
    kvs = (KV_TINY if dry else KV)[kv]
    return ["profile", *base, "--kv-heads", kvs, "--model-source", source, "--optimizer", "adamw",
            "--optimizer-impl", "foreach", "-p", recipe, "-b", str(batch), "--device", device,
            "--timed-steps", "2", *extra, "--json"]


def _background(args: list[str], work: Path, name: str) -> subprocess.Popen:
    """A fake-tensor run on the CPU cores while the GPU runs the real one."""
    name = slug(name)
    fh = open(work / "raw" / f"{name}.json", "w")
    # fake tensors compute nothing: one thread each, so the GPU runs' Python (the tracker) keeps its cores
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-m", "memplan", *args], stdout=fh,
                            stderr=open(work / "logs" / f"{name}.log", "w"), cwd=ROOT, env=env)


def _load(work: Path, name: str) -> dict | None:
    try:
        return json.loads((work / "raw" / f"{slug(name)}.json").read_text())
    except (OSError, ValueError):
        return None


def states(m: dict) -> int:
    return sum(m.get(k) or 0 for k in ("weights", "master_weights", "gradients", "optimizer_states"))


def compare_runs(f: Figures, work: Path, runs: list[tuple[str, list[str], list[str]]]) -> None:
    """Each (label, real args, fake args): the fake runs in the background, the real ones one after the other."""
    device = "cpu" if f.dry else "cuda"
    fakes = [(label, _background(fake, work, f"fake-{label}")) for label, _, fake in runs]
    for label, real, _ in runs:
        data, err = memplan(real, work, f"{device}-{label}", 60 if f.dry else 90)
        if data is None:
            f.error(label, err)
            continue
        m, c = data["measured"], data["measured"].get("cuda") or {}
        if m.get("oom"):
            f.error(label, f"out of memory during {m.get('oom_phase')}: {m.get('oom_message')}")
            continue
        e = data["error_percent"]
        f.add(f"{label}: estimate vs max_memory_allocated", round(e, 2) if e is not None else None, "%",
              f"|error| <= {ESTIMATE_TOLERANCE_PERCENT:g}%", e is not None and abs(e) <= ESTIMATE_TOLERANCE_PERCENT,
              note=f"measured {m['peak_allocated'] / 2**30:.2f} GiB in {m['peak_phase']}")
        kernels = [n for n in m.get("notes", []) if n.startswith("sdpa kernel")]
        if c:
            reserved = c.get("reserved_peak_bytes")
            if reserved:
                f.add(f"{label}: reserved / allocated - 1", round(reserved / m["peak_allocated"] - 1, 4), "",
                      "allocator assumption 0.05 (profiles/overheads/cuda.json)", None)
            f.add(f"{label}: step", round(c["step_seconds"] * 1e3, 1) if c.get("step_seconds") else None, "ms",
                  note=f"{c.get('achieved_tflops') or 0:.0f} TFLOP/s, MFU {c.get('mfu') or 0:.1%}; "
                       + "; ".join(kernels))
        f.info[label] = {"peak_phase": m["peak_phase"], "notes": m.get("notes", [])}
    for label, proc in fakes:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        fake, real = _load(work, f"fake-{label}"), _load(work, f"{device}-{label}")
        if fake is None or real is None:
            f.error(f"{label}: model states, fake = {device}", "a run did not finish (see its log)")
            continue
        a, b = states(real["measured"]), states(fake["measured"])
        f.add(f"{label}: model states, {device} - fake", a - b, "B", "0 (equal to the byte)", a == b)


def step_profiles(f: Figures, work: Path) -> None:
    device = "cpu" if f.dry else "cuda"
    runs = []
    for kv in ("gqa", "mha"):
        for recipe, batches in BATCHES.items():
            for b in batches:
                if f.dry and (kv, recipe, b) not in DRY_PROFILES:  # every code path, not every combination
                    continue
                label = f"{kv} {recipe} b{b}"
                runs.append((label, profile_args("", kv, recipe, b, device, f.dry),
                             profile_args("", kv, recipe, b, "fake", f.dry)))
    compare_runs(f, work, runs)


def step_hf(f: Figures, work: Path) -> None:
    device = "cpu" if f.dry else "cuda"
    runs = []
    for recompute in ("full",) if f.dry else ("none", "full"):
        label = f"hf llama bf16-mixed b4 recompute {recompute}"
        extra = ("--recompute", recompute)
        runs.append((label, profile_args("", "gqa", "bf16-mixed", 4, device, f.dry, "hf", extra),
                     profile_args("", "gqa", "bf16-mixed", 4, "fake", f.dry, "hf", extra)))
    compare_runs(f, work, runs)


def step_distributed(f: Figures, work: Path) -> None:
    device = "cpu" if f.dry else "cuda"
    base = MODEL_TINY if f.dry else [*MODEL_1B[:2], "8", *MODEL_1B[3:]]  # 8 of the 18 layers
    for strategy in ("zero3",) if f.dry else ("ddp", "zero3"):
        args = ["profile", *base, "--kv-heads", KV_TINY["gqa"] if f.dry else KV["gqa"], "--model-source", "reference",
                "-p", "bf16-mixed", "-b", "2", "--device", device, "--nproc", "1", "--strategy", strategy, "--json"]
        data, err = memplan(args, work, f"distributed-{strategy}", 60 if f.dry else 70)
        if data is None:
            f.error(f"--nproc 1 {strategy}", err)
            continue
        (r,) = data["ranks"]
        m, e = r["measured"], r["estimated"]
        oom = [n for n in data.get("notes", []) if "OUT OF MEMORY" in n]
        if oom:
            f.error(f"--nproc 1 {strategy}", oom[0])
            continue
        f.add(f"--nproc 1 {strategy} ({data['backend']}): model states - estimate", m["model_states"] -
              e["model_states"], "B", "0", m["model_states"] == e["model_states"],
              note=r["explanations"].get("model_states", ""))
        f.add(f"--nproc 1 {strategy}: peak allocated", round(m["peak_allocated"] / 2**30, 3), "GiB",
              note=f"estimate {e['peak_allocated'] / 2**30:.3f} GiB; peak in {m['peak_phase']}")
        if m.get("backend_device_bytes") is not None:
            f.add(f"--nproc 1 {strategy}: NCCL device bytes", round(m["backend_device_bytes"] / 2**20, 1), "MiB",
                  note=f"estimate {(e.get('backend_device_bytes') or 0) / 2**20:.0f} MiB "
                       "(profiles/overheads/cuda.json nccl_mib_per_communicator)")


def step_system(f: Figures, work: Path) -> None:
    device = "cpu" if f.dry else "cuda"
    layer = (["1", "--layers", "1", "--hidden", "256", "--heads", "4", "--kv-heads", "2", "--ffn", "512", "--vocab",
              "1024", "--seq", "128"] if f.dry else
             ["1", "--layers", "1", "--hidden", "4096", "--heads", "32", "--kv-heads", "8", "--ffn", "14336",
              "--vocab", "32000", "--seq", "4096"])  # one Llama-3-8B layer; MoE: Mixtral-8x7B's 8 experts, top 2
    shapes = {"dense": [], "moe": ["--experts", "8" if not f.dry else "4", "--top-k", "2"]}
    for kind, moe in shapes.items():
        for recipe in ("bf16-mixed", "fp8-mixed"):
            if f.dry and (kind, recipe) != ("moe", "fp8-mixed"):
                continue
            flags = [*layer, *moe, "--mlp", "swiglu", "--norm", "rmsnorm", "-b", "1", "-p", recipe]
            label = f"{kind} layer {recipe}"
            rec = work / "raw" / f"system-{kind}-{recipe}.json"
            data, err = memplan(["bench", "--device", device, "--system", *flags, "--repeats", "3", "--out", str(rec),
                                 "--force", "--json"], work, f"system-{kind}-{recipe}-bench", 60)
            if data is None:
                f.error(f"{label}: bench --system", err)
                continue
            gpu = ["--gpu", data.get("gpu_profile") or "h100-sxm"]
            plain, err1 = memplan(["time", *flags, *gpu, "--tokens", "1M", "--json"], work, f"time-{kind}-{recipe}", 40)
            measured, err2 = (None, "dry: a CPU record is refused by `time --system`") if f.dry else memplan(
                ["time", *flags, *gpu, "--tokens", "1M", "--system", str(rec), "--json"], work,
                f"time-system-{kind}-{recipe}", 40)
            if plain is None:
                f.error(f"{label}: memplan time", err1)
                continue
            pred = plain["step_seconds"]
            if measured is None:
                f.add(f"{label}: predicted step", round(pred * 1e3, 3), "ms", note=err2)
                continue
            meas = measured["step_seconds"]
            f.add(f"{label}: predicted / from measured kernels", round(pred / meas, 3), "",
                  "recorded (1 = the profile's curves match this GPU)", None,
                  note=f"predicted {pred * 1e3:.3f} ms, from the bench --system record {meas * 1e3:.3f} ms")


def step_pytest(f: Figures, work: Path) -> None:
    files = ["tests/test_measure_cuda.py", "tests/test_bench.py", "tests/test_bench_system.py"]
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", *files]  # -q: pyproject's addopts
    try:
        p = run_group(cmd, 100, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    except subprocess.TimeoutExpired:
        f.error("pytest -m cuda", "timed out")
        return
    (work / "logs" / "pytest-cuda.log").write_text(p.stdout + p.stderr)
    tail = one_line(p.stdout.replace("=", ""))
    f.add("pytest -m cuda (3 tests)", tail, "", "3 passed", "3 passed" in tail and p.returncode == 0)


STEP_FUNCS = {"env": step_env, "bench": step_bench, "profiles": step_profiles, "hf": step_hf,
              "distributed": step_distributed, "system": step_system, "pytest": step_pytest}


def run_step(name: str, work: Path, dry: bool) -> int:
    f = Figures(name, dry, work / "results" / f"{name}.json")
    try:
        STEP_FUNCS[name](f, work)
    except Exception as exc:  # noqa: BLE001 - a step that breaks is a row, and the check goes on
        import traceback

        (work / "logs" / f"{name}.traceback").write_text(traceback.format_exc())
        f.error(f"{name} (step)", f"{type(exc).__name__}: {one_line(str(exc)) or type(exc).__name__}")
    f.save()
    if f.path is not None and not f.rows:  # a step that found nothing says so
        f.error(name, "no figures")
    return 0


# ---------------------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    def verdict(r):
        return {True: "PASS", False: "FAIL", None: "info"}[r["pass"]]

    def value(r):
        v = r["value"]
        return ("-" if v is None else str(v)) + (f" {r['unit']}" if r["unit"] and v is not None else "")

    cols = [("step", lambda r: r["step"]), ("figure", lambda r: r["name"]), ("value", value),
            ("criterion", lambda r: r["criterion"]), ("", verdict), ("note", lambda r: r["note"][:110])]
    cells = [[c[0] for c in cols]] + [[str(fn(r)) for _, fn in cols] for r in rows]
    widths = [min(72, max(len(c[i]) for c in cells)) for i in range(len(cols))]
    lines = []
    for j, c in enumerate(cells):
        lines.append("  ".join(x[:widths[i]].ljust(widths[i]) for i, x in enumerate(c)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(work: Path, out: Path, dry: bool, budget: float, only: list[str] | None) -> int:
    start = time.monotonic()
    for sub in ("results", "logs", "raw"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    timings = {}
    for name, (t_gpu, t_dry) in STEPS.items():
        if only and name not in only:
            continue
        left = budget - (time.monotonic() - start)
        result = work / "results" / f"{name}.json"
        if left < 15:
            result.write_text(json.dumps({"rows": [{"step": name, "name": name, "value": None, "unit": "",
                                                    "criterion": "runs", "pass": False,
                                                    "note": f"skipped: the {budget:.0f} s budget was spent"}]}))
            continue
        timeout = min(t_dry if dry else t_gpu, left)
        t0 = time.monotonic()
        print(f"gpu-check: {name} (timeout {timeout:.0f} s, {time.monotonic() - start:.0f} s elapsed)",
              file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "step", name, "--work", str(work)] + (["--dry"] if dry else [])
        why = None
        try:
            with open(work / "logs" / f"step-{name}.log", "w") as log:
                p = run_group(cmd, timeout, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            if p.returncode != 0:
                why = f"the step exited {p.returncode} (logs/step-{name}.log)"
        except subprocess.TimeoutExpired:
            why = f"timed out after {timeout:.0f} s: the figures above it are what it measured"
        timings[name] = round(time.monotonic() - t0, 1)
        if why is not None or not result.exists():
            try:
                done = json.loads(result.read_text())
            except (OSError, ValueError):
                done = {"rows": [], "info": {}}
            done["rows"].append({"step": name, "name": name, "value": None, "unit": "", "criterion": "runs",
                                 "pass": False, "note": why or f"no result (logs/step-{name}.log)"})
            result.write_text(json.dumps(done))
    rows, info = [], {}
    for name in STEPS:
        try:
            d = json.loads((work / "results" / f"{name}.json").read_text())
        except (OSError, ValueError):
            continue
        rows += d["rows"]
        info[name] = d.get("info", {})
    total = round(time.monotonic() - start, 1)
    judged = [r for r in rows if r["pass"] is not None]
    passed = sum(1 for r in judged if r["pass"])
    head = (f"memplan GPU check{' (DRY RUN on the CPU: nothing judged)' if dry else ''}: {passed}/{len(judged)} "
            f"criteria pass; {total} s ({', '.join(f'{k} {v} s' for k, v in timings.items())})")
    text = head + "\n\n" + table(rows) + "\n"
    (out / "summary.txt").write_text(text)
    (out / "figures.json").write_text(json.dumps({"dry": dry, "seconds": total, "step_seconds": timings,
                                                  "passed": passed, "judged": len(judged), "figures": rows,
                                                  "info": info}, indent=1, default=str))
    with tarfile.open(out / "work.tar.gz", "w:gz") as tar:
        tar.add(work, arcname="gpu-check-work")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--work", required=True, type=Path)
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--dry", action="store_true")
    r.add_argument("--budget", type=float, default=340.0, help="seconds for all steps (default 340)")
    r.add_argument("--only", help="comma-separated steps")
    s = sub.add_parser("step")
    s.add_argument("name", choices=list(STEPS))
    s.add_argument("--work", required=True, type=Path)
    s.add_argument("--dry", action="store_true")
    a = ap.parse_args(argv)
    dry = a.dry or os.environ.get("MEMPLAN_GPU_CHECK_DRY") == "1"
    if a.cmd == "run":
        return run(a.work, a.out, dry, a.budget, a.only.split(",") if a.only else None)
    return run_step(a.name, a.work, dry)


if __name__ == "__main__":
    sys.exit(main())
