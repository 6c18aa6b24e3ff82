"""One generator per command: a seed -> an argument list and the files it names.

Each case draws from its own `random.Random(f"{seed}:{index}")`, so case 42 of seed 13 is the same case whatever
the number of cases asked for.  Most values are sensible (so the command runs and its answer is checked), some
are odd (ODD_* in values.py), some flags belong to the other mode or contradict each other.  Paths are relative
to the case's own folder (the runner runs each case there), so nothing is written outside it.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from tests.fuzz import values as V
from tests.fuzz.files import FAMILIES, FileSpec, config_file, edge_file, tiny_config

# seconds a case may run before it counts as a hang (in-process, imports already warm)
TIMEOUTS = {"estimate": 10.0, "models": 5.0, "gpus": 5.0, "interconnects": 5.0, "time": 10.0, "plan": 60.0,
            "profile": 60.0, "bench": 60.0, "other": 5.0}


@dataclass
class Case:
    seed: int
    index: int
    command: str
    args: list[str]
    files: dict[str, FileSpec] = field(default_factory=dict)
    note: str = ""  # what the generator chose that the arguments do not show (a config's oddity)

    @property
    def timeout(self) -> float:
        return TIMEOUTS.get(self.command, TIMEOUTS["other"])

    @property
    def id(self) -> str:
        return f"case{self.index:05d}"

    def describe(self) -> str:
        lines = [f"memplan {' '.join(_quote(a) for a in self.args)}"]
        lines += [f"  file {name}: {spec.describe()}" for name, spec in self.files.items()]
        if self.note:
            lines.append(f"  ({self.note})")
        return "\n".join(lines)


def _quote(arg: str) -> str:
    import shlex

    text = shlex.quote(arg)
    return text if len(text) < 200 else text[:150] + f"...({len(text)} chars)"


class Args:
    """An argument list under construction, with the case's files."""

    def __init__(self, rng: random.Random, *args: str) -> None:
        self.rng = rng
        self.args: list[str] = list(args)
        self.files: dict[str, FileSpec] = {}
        self.notes: list[str] = []

    def add(self, *args) -> None:
        self.args += [str(a) for a in args]

    def maybe(self, p: float, *args) -> None:
        if self.rng.random() < p:
            self.add(*args)

    def file(self, path: str, files: dict[str, FileSpec]) -> str:
        self.files.update(files)
        return path


# ---- flag tables: (flag, sensible values, odd values); None as a value = a bare flag --------------------------
ARCH = [("--layers", [1, 2, 4, 32, 80], V.ODD_INTS + ["100001"]), ("--hidden", [64, 128, 768, 4096, 5120], V.ODD_INTS),
        ("--heads", [1, 4, 8, 12, 32, 40, 64], V.ODD_INTS), ("--kv-heads", [1, 2, 4, 8], V.ODD_INTS),
        ("--head-dim", [16, 64, 128], V.ODD_INTS), ("--ffn", [128, 3072, 11008, 14336], V.ODD_INTS),
        ("--vocab", [256, 32000, 50257, 128256], V.ODD_INTS), ("--max-positions", [128, 2048, 4096, 131072],
                                                                V.ODD_INTS),
        ("--mlp", ["gelu", "swiglu"], ["relu", ""]), ("--norm", ["layernorm", "rmsnorm"], ["batchnorm"]),
        ("--tied", [None], []), ("--untied", [None], []), ("--experts", [0, 2, 8, 64], V.ODD_INTS),
        ("--top-k", [1, 2, 8], V.ODD_INTS)]
PRECISION = [("-p", V.RECIPES, ["bf17-mixed", "", "fp64", "BF16-MIXED", "mixed"]),
             ("--weights-dtype", V.DTYPES, ["", "fp64", "x"]), ("--grads-dtype", V.DTYPES, ["", "int4"]),
             ("--master-dtype", ["fp32", "none"], ["bf16", "", "fp8"]), ("--states-dtype", V.DTYPES, ["", "q8"]),
             ("-o", V.OPTIMIZERS, ["adamm", "", "Adam", "sgd_momentum", "adamw-4bit"])]
LAYOUT = [("-n", [1, 2, 4, 8, 16, 64, 1024], V.ODD_INTS + [str(2**20 + 1)]),
          ("--gpus-per-node", [1, 2, 4, 8, 16], V.ODD_INTS + ["5000"]), ("--tp", [1, 2, 4, 8], V.ODD_INTS + ["3"]),
          ("--pp", [1, 2, 4, 8], V.ODD_INTS + ["3"]), ("--cp", [1, 2, 4], V.ODD_INTS),
          ("--ep", [1, 2, 4, 8], V.ODD_INTS), ("--etp", [1, 2, 4], V.ODD_INTS),
          ("--sequence-parallel", [None], []), ("--no-sequence-parallel", [None], []),
          ("--virtual-stages", [1, 2, 3], V.ODD_INTS), ("--first-stage-layers", [1, 2, 5, 40], V.ODD_INTS),
          ("--last-stage-layers", [1, 2, 5], V.ODD_INTS), ("-z", [0, 1, 2, 3], ["4", "-1", "nan", "1.5", ""]),
          ("--offload-optimizer", ["none", "cpu", "nvme"], ["gpu", ""]),
          ("--offload-params", ["none", "cpu", "nvme"], ["disk"]),
          ("--engine", ["plain", "deepspeed", "megatron", "fsdp"], ["vllm", "hf", "torch", ""])]
WORKLOAD = [("-b", [1, 2, 4, 8, 32], V.ODD_INTS), ("-s", [1, 128, 512, 2048, 4096, 32768], V.ODD_INTS + ["1e9"]),
            ("--grad-accum", [1, 4, 16], V.ODD_INTS), ("--recompute", ["none", "selective", "full"], ["partial"]),
            ("--attention", ["eager", "sdpa", "flash"], ["flash2", ""]),
            ("--implementation", ["hf", "megatron"], ["hf2", "", "../hf", "\u03bb"])]
TRAINING = ARCH + PRECISION + LAYOUT + WORKLOAD
LORA = [("--lora-rank", [1, 8, 16, 64], V.ODD_INTS + ["100000", str(2**20 + 1)]),
        ("--lora-targets", ["q_proj,v_proj", "all-linear", "q,v", "qkv", "gate,up,down", "c_attn", "o"],
         ["", ",", "q_proj,,v_proj", "nonexistent", "ALL-LINEAR", " q_proj ", "router"]),
        ("--quantize-base", ["nf4", "int8"], ["fp4", ""])]
SERVING = [("--batch", [1, 8, 64, 256], V.ODD_INTS), ("--context", [1, 128, 2048, 8192, 131072], V.ODD_INTS),
           ("--prompt", [1, 512, 2048], V.ODD_INTS), ("--output", [0, 1, 256], V.ODD_INTS),
           ("--kv-cache-dtype", ["auto", "bfloat16", "float16", "fp8", "fp8_e4m3", "fp8_e5m2"], ["fp4", "", "int8"]),
           ("--kv-dtype", ["bf16", "fp16", "fp8"], ["fp64", ""]),
           ("-q", ["fp8", "awq", "awq_marlin", "gptq", "gptq_marlin", "compressed-tensors", "mxfp4", "bitsandbytes"],
            ["int3", "", "FP8", "gguf"]),
           ("--gpu-memory-utilization", [0.5, 0.9, 0.92, 1], V.ODD_FLOATS + ["1.5", "1.0000001"]),
           ("--max-model-len", [128, 2048, 4096, 32768], V.ODD_INTS),
           ("--max-num-seqs", [1, 16, 256, 1024], V.ODD_INTS),
           ("--max-num-batched-tokens", [16, 2048, 8192], V.ODD_INTS),
           ("--block-size", [16, 32, 64, 128], V.ODD_INTS + ["17", "8", "1048576"]),
           ("--enforce-eager", [None], []), ("--enable-expert-parallel", [None], []),
           ("--vllm-version", ["0.9.2", "0.10.0", "0.20.0", "0.33.0", "0.33"], ["1.0", "", "0.9", "v0.33", "0.8.5"]),
           ("--vllm-entrypoint", ["serve", "llm"], ["api"]), ("--prefill-chunk", [256, 2048], V.ODD_INTS),
           ("--engine", ["vllm", "hf"], ["plain", "sglang", ""])]


def _draw_flags(a: Args, table: list, count: int, p_odd: float = 0.2) -> None:
    for flag, good, odd in a.rng.sample(table, min(count, len(table))):
        value = V.pick(a.rng, good, odd, p_odd)
        a.add(flag) if value is None else a.add(flag, value)


def _count(rng: random.Random, mean: float = 2.0) -> int:
    n = 0
    while rng.random() < mean / (mean + 1) and n < 8:
        n += 1
    return n


def _model(a: Args, profiles=V.MODEL_PROFILES, p_file: float = 0.12, p_count_arch: float = 0.08) -> None:
    r = a.rng.random()
    if r < p_file:
        path, files, kind = config_file(a.rng)
        a.add(a.file(path, files))
        a.notes.append(f"config: {kind}")
    elif r < p_file + p_count_arch:  # a bare count with architecture flags (the custom family)
        a.add(a.rng.choice(["7B", "1M", "124M", "1e9"]))
        _draw_flags(a, ARCH, a.rng.randint(1, 5), p_odd=0.1)
    elif r < p_file + p_count_arch + 0.03:
        pass  # MODEL left out (only a --setup file can name it)
    else:
        a.add(V.model_name(a.rng, profiles))


# ---- estimate ------------------------------------------------------------------------------------------------
def estimate_training(a: Args) -> None:
    _model(a)
    _draw_flags(a, TRAINING, _count(a.rng, 2.5))
    a.maybe(0.5, "-g", V.gpu_name(a.rng))
    if a.rng.random() < 0.15:
        _draw_flags(a, LORA, a.rng.randint(1, 3))
    if a.rng.random() < 0.08:
        a.add(*a.rng.choice([["--max-micro-batch"], ["--max-seq"], ["--max-micro-batch", "--max-seq"]]))
    if a.rng.random() < 0.08:
        a.add("--compare")
    if a.rng.random() < 0.05:
        _draw_flags(a, SERVING, 1)  # a flag of the other mode
    _maybe_files(a, training=True)


def estimate_inference(a: Args) -> None:
    _model(a)
    a.add("--mode", "inference")
    _draw_flags(a, SERVING, _count(a.rng, 2.5))
    if a.rng.random() < 0.3:
        _draw_flags(a, [t for t in LAYOUT if t[0] in ("-n", "--tp", "--pp", "--ep", "--gpus-per-node")], 1)
    a.maybe(0.75, "-g", V.gpu_name(a.rng))
    if a.rng.random() < 0.12:
        a.add(*a.rng.choice([["--max-batch"], ["--max-context"], ["--max-batch", "--max-context"]]))
    if a.rng.random() < 0.06:
        _draw_flags(a, WORKLOAD + LORA + [("--compare", [None], []), ("--max-seq", [None], [])], 1)
    if a.rng.random() < 0.05:
        a.add("--save-setup", "setup-out.json")


def _maybe_files(a: Args, training: bool) -> None:
    rng = a.rng
    if rng.random() < 0.06:
        a.add("--setup", a.file(*setup_file(rng)))
    if rng.random() < 0.05:
        a.add("--calibration", a.file(*record_file(rng)))
    if training and rng.random() < 0.05:
        a.add("--save-setup", a.file(*output_path(rng, "saved-setup.json")))
    if training and rng.random() < 0.03:
        a.add("--plot", a.file(*output_path(rng, "memory.png")))
        a.maybe(0.5, "--force")
    if rng.random() < 0.05:
        a.add("--units", rng.choice(["gib", "GB", "gb", "GiB", "tb", ""]))
    if rng.random() < 0.7:
        a.add("--json")


def estimate_files(a: Args) -> None:
    """estimate with every file edge case: MODEL, --setup, --calibration, --save-setup, --plot."""
    where = a.rng.choice(["model", "setup", "calibration", "save-setup", "plot"])
    if where == "model":
        if a.rng.random() < 0.5:
            path, files = edge_file(a.rng, "config.json")
        else:
            path, files, kind = config_file(a.rng, odd=0.9)
            a.notes.append(f"config: {kind}")
        a.add(a.file(path, files))
    else:
        a.add(a.rng.choice(V.SMALL_PROFILES + ["llama-2-7b"]))
        if where in ("setup", "calibration"):
            path, files = edge_file(a.rng, f"{where}.json") if a.rng.random() < 0.5 else \
                (setup_file(a.rng) if where == "setup" else record_file(a.rng))
            a.add("--" + where, a.file(path, files))
        else:
            a.add("--" + where, a.file(*output_path(a.rng, "out.png" if where == "plot" else "out.json")))
            a.maybe(0.3, "--force")
    a.maybe(0.5, "-g", V.gpu_name(a.rng))
    a.maybe(0.7, "--json")


# ---- the catalog commands ------------------------------------------------------------------------------------
def models(a: Args) -> None:
    r = a.rng.random()
    if r < 0.5:
        a.add(V.model_name(a.rng))
    elif r < 0.7:
        path, files, kind = config_file(a.rng, odd=0.7)
        a.add(a.file(path, files))
        a.notes.append(f"config: {kind}")
    elif r < 0.8:
        a.add(a.file(*edge_file(a.rng, "config.json")))
    a.maybe(0.7, "--json")
    if a.rng.random() < 0.1:
        _draw_flags(a, ARCH, 1)  # not a models flag


def gpus(a: Args) -> None:
    a.maybe(0.7, V.gpu_name(a.rng))
    a.maybe(0.3, "--units", a.rng.choice(["gib", "gb", "GB", "tb"]))
    a.maybe(0.6, "--json")


def interconnects(a: Args) -> None:
    a.maybe(0.3, a.rng.choice(V.INTERCONNECTS + ["x"]))
    a.maybe(0.6, "--json")


# ---- time and plan (memplan/perf, being rewritten) -----------------------------------------------------------
TIME_FLAGS = [("-t", ["300B", "1.4T", "2e11", "1e9"], ["0", "-1", "nan", "1e400", "abc", "", "inf", "1e30", "5x"]),
              ("--steps", [1, 100, 10000], V.ODD_INTS), ("-B", [8, 64, 512, 1024], V.ODD_INTS + [str(10**30)]),
              ("--achieved-tflops", [100, 400], V.ODD_FLOATS), ("--mfu", [0.3, 0.5], V.ODD_FLOATS + ["1.5", "50"]),
              ("--kernel-scale", [0.5, 1, 1.2], V.ODD_FLOATS), ("--execution", ["megatron-core", "pytorch",
                                                                               "megatron-2022"], ["", "x"]),
              ("--overlap", ["auto", "none", "dp", "all"], ["some"]),
              ("--interconnect", V.INTERCONNECTS, ["", "nvlink9", "infiniband-ndr"]),
              ("--internode", V.INTERCONNECTS, ["", "carrier-pigeon"]),
              ("--cpu-bandwidth", [50, 200], V.ODD_FLOATS), ("--price", [0, 2.5], V.ODD_FLOATS),
              ("--causal-flops", [None], [])]
PLAN_FLAGS = [("-B", [8, 64, 512], V.ODD_INTS + [str(10**30), str(2**24 + 1)]), ("--by", ["time", "cost"], ["speed"]),
              ("--top", [1, 3, 5], V.ODD_INTS), ("--min-gpus", [None], []), ("--max-gpus", [8, 64, 512], V.ODD_INTS),
              ("--scale", [None], []), ("--max-micro-batch", [1, 4, 16], V.ODD_INTS),
              ("--cpu-memory", ["1TB", "512GiB", "2TiB"], V.ODD_SIZES), ("--reference", [None], []),
              ("-t", ["300B", "1T"], ["0", "nan", ""]), ("--steps", [100], V.ODD_INTS),
              ("--kernel-scale", [1.0], V.ODD_FLOATS), ("--overlap", ["auto", "none"], ["x"]),
              ("--price", [2.0], V.ODD_FLOATS), ("--cpu-bandwidth", [200], V.ODD_FLOATS)]
SMALL_LAYOUT = [t for t in LAYOUT + WORKLOAD if t[0] in ("-n", "--tp", "--pp", "-z", "-b", "-s", "--recompute",
                                                       "--virtual-stages", "--engine", "--offload-optimizer")]


def time_cmd(a: Args) -> None:
    _model(a, p_file=0.05, p_count_arch=0.05)
    a.maybe(0.92, "-g", V.gpu_name(a.rng))
    r = a.rng.random()
    if r < 0.7:
        a.add("-t", V.pick(a.rng, ["300B", "1.4T", "2e11", "1e9"], TIME_FLAGS[0][2], 0.15))
    elif r < 0.9:
        a.add("--steps", a.rng.choice([1, 100, 10000]), "-B", a.rng.choice([8, 64, 512]))
    _draw_flags(a, TIME_FLAGS[3:], _count(a.rng, 1.5))
    _draw_flags(a, SMALL_LAYOUT, _count(a.rng, 1.5))
    if a.rng.random() < 0.15:
        a.add("--measured", a.file(*(record_file(a.rng, timing=True) if a.rng.random() < 0.6
                                     else edge_file(a.rng, "measured.json"))))
    if a.rng.random() < 0.05:
        a.add("--system", a.file(*edge_file(a.rng, "system.json")))
    if a.rng.random() < 0.05:
        a.add("--setup", a.file(*setup_file(a.rng)))
    if a.rng.random() < 0.04:
        a.add("--save-setup", a.file(*output_path(a.rng, "saved-setup.json")))
    if a.rng.random() < 0.05:
        _draw_flags(a, LORA, a.rng.randint(1, 2))
    a.maybe(0.7, "--json")


def plan(a: Args) -> None:
    a.add(a.rng.choice(["gpt2", "llama-2-7b", "llama-2-7b", "mixtral-8x7b", "qwen3-0.6b", "llama-2-70b"])
          if a.rng.random() < 0.9 else V.model_name(a.rng))
    a.maybe(0.92, "-g", V.gpu_name(a.rng))
    a.maybe(0.9, "-B", V.pick(a.rng, [8, 64, 256, 512], V.ODD_INTS, 0.15))
    a.maybe(0.7, "-n", a.rng.choice([1, 8, 16, 64]))
    a.maybe(0.5, "-s", a.rng.choice([512, 1024, 2048, 4096]))
    _draw_flags(a, PLAN_FLAGS, _count(a.rng, 1.5))
    _draw_flags(a, SMALL_LAYOUT, _count(a.rng, 0.8))
    if a.rng.random() < 0.04:
        a.add("--setup", a.file(*setup_file(a.rng)))
    a.maybe(0.7, "--json")


# ---- profile and bench (torch) -------------------------------------------------------------------------------
TINY_ARCH = ["--layers", "2", "--hidden", "64", "--heads", "4", "--ffn", "128", "--vocab", "256"]
PROFILE_FLAGS = [("--model-source", ["hf", "reference"], ["keras"]), ("--optimizer-impl", ["for-loop", "foreach"],
                                                                       ["fused2"]),
                 ("--warmup-steps", [1, 2], V.ODD_INTS), ("--timed-steps", [1, 2], V.ODD_INTS),
                 ("--factory", ["tests.fuzz.values:no_such_function"],
                  ["", ":", "os", "os:getcwd", "math:pi", "builtins:dict", "no_such_module_x:f", "os:"]),
                 ("--snapshot", ["snap.pickle"], [""]), ("-b", [1, 2], V.ODD_INTS), ("-s", [16, 32], V.ODD_INTS),
                 ("-o", ["adamw", "sgd", "adafactor", "lion"], ["adamm"]), ("-p", ["bf16-mixed", "fp32", "bf16"],
                                                                            ["fp8-mixed", "x"]),
                 ("--recompute", ["none", "full", "selective"], []), ("--attention", ["eager", "sdpa"], ["flash"]),
                 ("--nproc", [2], ["0", "-1", "1e400"]), ("--strategy", ["ddp", "zero1", "zero2", "zero3"], ["zero4"]),
                 ("--mixed-precision", [None], []), ("-g", ["a100-80gb", "t4"], ["", "a100-80gbb"]),
                 ("-z", [0, 1, 2, 3], ["9"])]


def profile(a: Args) -> None:
    device = a.rng.choice(["fake"] * 6 + ["cpu"] * 2 + ["cuda", None])
    r = a.rng.random()
    if r < 0.45:
        a.add("1M", *TINY_ARCH)
    elif r < 0.85 or device == "cpu":
        # real tensors: the text-only families (a multimodal build takes seconds)
        cfg = tiny_config(a.rng, a.rng.choice(sorted(set(FAMILIES) - {"gemma3", "llama4"}))) \
            if device == "cpu" else None
        if cfg is not None:
            a.add(a.file("config.json", {"config.json": FileSpec("text", json.dumps(cfg))}))
        else:
            path, files, kind = config_file(a.rng, odd=0.5)
            a.add(a.file(path, files))
            a.notes.append(f"config: {kind}")
    else:
        a.add(a.file(*edge_file(a.rng, "config.json")))
    if device is not None:
        a.add("--device", device)
    if "-s" not in a.args:
        a.add("-s", "32")
    table = PROFILE_FLAGS if device == "fake" else [t for t in PROFILE_FLAGS if t[0] not in ("--nproc", "--strategy",
                                                                                            "--mixed-precision")]
    _draw_flags(a, table, _count(a.rng, 1.2), p_odd=0.3)
    if device == "fake" and "--nproc" in a.args and "--strategy" not in a.args:
        a.maybe(0.5, "--strategy", a.rng.choice(["ddp", "zero3"]))
    if a.rng.random() < 0.25:
        a.add("--out", a.file(*output_path(a.rng, "record.json")))
        a.maybe(0.4, "--force")
    if a.rng.random() < 0.05:
        a.add("--plot", a.file(*output_path(a.rng, "profile.png")))
    if a.rng.random() < 0.05:
        a.add("--save-setup", a.file(*output_path(a.rng, "saved-setup.json")))
    if a.rng.random() < 0.06 and device == "fake":  # on cpu the bisection really allocates, up to the GPU's size
        a.add("--find-max-batch", "-g", "t4")
    a.maybe(0.7, "--json")


def bench(a: Args) -> None:
    a.add("--device", a.rng.choice(["cpu"] * 8 + ["cuda", "tpu"]))
    a.add("--size", V.pick(a.rng, [64, 96, 128], ["32", "0", "-1", "1e400", "nan", str(10**6), str(2**24),
                                                   str(2**24 + 1), "64.5"], 0.3))
    a.add("--repeats", V.pick(a.rng, [1, 2], ["0", "-1", "1e9", "nan"], 0.2))
    a.maybe(0.5, "--dtypes", V.pick(a.rng, ["fp32", "fp32,bf16", "bf16"], ["", ",", "fp32,,bf16", "fp8", "int4",
                                                                         "FP32", "fp16,fp16"], 0.4))
    a.maybe(0.2, "-g", V.gpu_name(a.rng))
    if a.rng.random() < 0.3:
        a.add("--out", a.file(*output_path(a.rng, "bench.json")))
        a.maybe(0.4, "--force")
    a.maybe(0.6, "--json")


def other(a: Args) -> None:
    a.args = [a.rng.choice(["estimat", "", "--version", "-h", "--help", "trace", "Estimate", "\u03bb", "--json",
                            "estimate --json"])]
    a.maybe(0.3, "7B")


# ---- issue 18: setup files per reader, config.json mutations per family, extremes of time/plan/estimate ------------
def estimate_setupfile(a: Args) -> None:
    """A --setup file of one reader's format, mutated (tests/fuzz/setupfiles.py), read by estimate."""
    from tests.fuzz.setupfiles import setup_file_case

    name, text, what = setup_file_case(a.rng)
    a.notes.append(what)
    a.add(a.rng.choice(["llama-2-7b", "gpt2", "mixtral-8x7b", "qwen3-0.6b"]))
    a.maybe(0.5, "-g", V.gpu_name(a.rng))
    a.add("--setup", a.file(name, {name: FileSpec("text", text)}))
    a.maybe(0.7, "--json")


def config_mutation(a: Args) -> None:
    """A family's own config.json (tiny), one to three settings changed to an odd value or a wrong type, for
    training or serving: every family in turn (the case index picks it)."""
    from tests.fuzz.setupfiles import mutate

    family = sorted(FAMILIES)[a.rng.randrange(len(FAMILIES))]
    cfg = tiny_config(a.rng, family)
    for _ in range(a.rng.choice([1, 1, 2, 3])):
        cfg = mutate(a.rng, cfg)
    a.notes.append(f"config: {family} mutated")
    a.add(a.file("config.json", {"config.json": FileSpec("text", json.dumps(cfg, allow_nan=True))}))
    if a.rng.random() < 0.35:
        a.add("--mode", "inference")
        _draw_flags(a, SERVING, _count(a.rng, 1.0))
    else:
        _draw_flags(a, TRAINING, _count(a.rng, 1.0), p_odd=0.1)
    a.maybe(0.6, "-g", V.gpu_name(a.rng))
    a.maybe(0.8, "--json")


BIG_MODELS = ["llama-3.1-405b", "llama-2-70b", "deepseek-v3", "gpt3-175b", "mixtral-8x7b", "llama-2-7b"]
DEEP_MODELS = ["gemma-2-9b", "gemma-3-27b", "llama-2-7b", "llama-4-scout", "gpt-oss-20b"]


def extremes_time(a: Args) -> None:
    """time at the edges: 2^19-2^20 GPUs, the 405B 8192-GPU layout, 10^15 tokens or steps, huge global batches,
    kernel scales past the peak, thousands of layers."""
    rng = a.rng
    kind = rng.choice(["405b", "gpus", "tokens", "batch", "kernel", "layers"])
    if kind == "405b":
        a.add("llama-3.1-405b", "-g", "h100-sxm", "-n", "8192", "--tp", "8", "--pp", "16", "-B", "2048", "-b", "1",
              "-s", "8192", "-t", rng.choice(["15T", "1e9", "1e15"]))
    elif kind == "gpus":
        a.add(rng.choice(BIG_MODELS), "-g", rng.choice(["h100-sxm", "t4", "b200"]),
              "-n", rng.choice([2**19, 2**20, 2**20 - 8, 3 * 2**18]), "--tp", rng.choice([1, 8]),
              "-t", rng.choice(["1T", "1e15"]))
    elif kind == "tokens":
        a.add(rng.choice(BIG_MODELS), "-g", "h100-sxm", "-n", rng.choice([8, 64]),
              *rng.choice([["-t", "1e15"], ["-t", "1"], ["--steps", str(10**15), "-B", "64"],
                           ["--steps", str(10**15 + 1), "-B", "64"], ["--steps", "1", "-B", "8"]]))
    elif kind == "batch":
        a.add(rng.choice(BIG_MODELS), "-g", "h100-sxm", "-n", rng.choice([8, 1024]), "-t", "1T",
              "-B", rng.choice([2**24, 2**24 + 8, 2**30, 2**40, 8]))
    elif kind == "kernel":
        a.add(rng.choice(BIG_MODELS[3:]), "-g", rng.choice(["h100-sxm", "a100-80gb"]), "-t", "1T", "-n", "8",
              "--kernel-scale", rng.choice(["2.5", "10", "1e-9", "100", "1.3", "0.01"]))
    else:
        # thousands of alternating layers: 2-5 s on a free core (tests/test_fuzz_issue18.py times 5,000 alone)
        a.add(rng.choice(DEEP_MODELS), "--layers", rng.choice([300, 1000]), "-g", "h100-sxm", "-t", "1T")
    a.maybe(0.7, "--json")


def extremes_plan(a: Args) -> None:
    rng = a.rng
    # the search is CPU-bound (a per-replica batch of 2^24 sequences has many micro-batch divisors: 10-20 s), so
    # the extremes here are the options' values, not the search's size
    a.add(rng.choice(["llama-2-7b", "gpt2", "qwen3-0.6b"]), "-g", rng.choice(["h100-sxm", "t4"]),
          "-B", rng.choice([8, 64, 4096]), "-n", rng.choice([8, 64, 1024]))
    a.maybe(0.3, "--top", rng.choice([1, 1000, 1001]))
    a.maybe(0.2, "--kernel-scale", rng.choice(["2.5", "50", "0.001"]))
    a.maybe(0.2, "--steps", rng.choice([1, 10**15, 10**15 + 1]))
    a.maybe(0.7, "--json")


def extremes_estimate(a: Args) -> None:
    """estimate at the edges: a DOES NOT FIT verdict above 2^19 GPUs (the hint doubles them), thousands of layers
    of an alternating-layer model, huge micro-batches and sequences."""
    rng = a.rng
    kind = rng.choice(["gpus", "layers", "shape"])
    if kind == "gpus":
        a.add(rng.choice(BIG_MODELS), "-g", rng.choice(["t4", "h100-sxm"]), "-n",
              rng.choice([2**19, 2**20, 2**19 + 2**18]), "--tp", rng.choice([1, 8]),
              "-s", rng.choice([4096, 131072]))
        a.maybe(0.4, "--pp", 16)
    elif kind == "layers":
        a.add(rng.choice(DEEP_MODELS), "--layers", rng.choice([500, 1000, 2000]))
        a.maybe(0.7, "-g", "h100-sxm")
        a.maybe(0.3, "--mode", "inference")
    else:
        a.add(rng.choice(BIG_MODELS), "-g", "h100-sxm", "-b", rng.choice([2**20, 2**24]),
              "-s", rng.choice([2**20, 2**22]))
    a.maybe(0.7, "--json")


GENERATORS = [  # (command, generator, weight)
    ("estimate", estimate_training, 40), ("estimate", estimate_inference, 24), ("estimate", estimate_files, 12),
    ("models", models, 5), ("gpus", gpus, 2.5), ("interconnects", interconnects, 1), ("time", time_cmd, 5),
    ("plan", plan, 4), ("profile", profile, 3), ("bench", bench, 1.5), ("other", other, 1),
    ("estimate", estimate_setupfile, 12), ("estimate", config_mutation, 8), ("time", extremes_time, 3),
    ("plan", extremes_plan, 1.5), ("estimate", extremes_estimate, 2.5),
]


def make_case(seed: int, index: int) -> Case:
    rng = random.Random(f"{seed}:{index}")
    command, gen, _ = rng.choices(GENERATORS, weights=[w for *_, w in GENERATORS])[0]
    a = Args(rng, *([] if command == "other" else [command]))
    gen(a)
    return Case(seed=seed, index=index, command=command, args=a.args, files=a.files, note="; ".join(a.notes))


# ---- file helpers the generators share -----------------------------------------------------------------------
def output_path(rng: random.Random, name: str) -> tuple[str, dict[str, FileSpec]]:
    """A path to write, fresh or already taken by something (a file, a folder, a FIFO, a link, a missing folder)."""
    kind = rng.choice(["fresh"] * 5 + ["existing", "folder", "fifo", "symlink", "dangling", "missing_folder",
                                       "under_file", "long_component", "hidden_dir", "existing_in_dir", "empty",
                                       "dot"])
    if kind == "fresh":
        return name, {}
    if kind == "empty":
        return rng.choice(["", " "]), {}
    if kind == "dot":  # the current folder itself
        return rng.choice([".", "./", ".."]), {}
    if kind == "existing":
        return name, {name: FileSpec("text", "old content\n")}
    if kind == "folder":
        return name, {name: FileSpec("folder")}
    if kind == "fifo":
        return name, {name: FileSpec("fifo")}
    if kind == "symlink":
        return name, {"target-" + name: FileSpec("text", "old\n"), name: FileSpec("symlink", "target-" + name)}
    if kind == "dangling":
        return name, {name: FileSpec("symlink", "gone-" + name)}
    if kind == "missing_folder":
        return "no/such/folder/" + name, {}
    if kind == "under_file":
        return "plain.txt/" + name, {"plain.txt": FileSpec("text", "x")}
    if kind == "long_component":
        return "e" * 300 + ".json", {}
    if kind == "hidden_dir":
        return "sub/" + name, {"sub": FileSpec("folder")}
    return "sub/" + name, {"sub/" + name: FileSpec("text", "old\n")}


SETUP_TEMPLATES = {
    "memplan.json": {"model": {"name": "llama-2-7b"}, "layout": {"gpus": 8, "zero": 3, "micro_batch": 2}},
    "ds_config.json": {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}},
                       "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
                       "bf16": {"enabled": True}},
    "accelerate.yaml": "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nnum_processes: 8\n"
                       "mixed_precision: bf16\nfsdp_config:\n  fsdp_sharding_strategy: FULL_SHARD\n",
    "axolotl.yaml": "base_model: meta-llama/Llama-2-7b-hf\nadapter: lora\nlora_r: 16\nmicro_batch_size: 2\n"
                    "sequence_len: 2048\nlora_target_modules:\n  - q_proj\n  - v_proj\n",
    "torchtitan.toml": "[model]\nname = \"llama3\"\nflavor = \"8B\"\n[parallelism]\ndata_parallel_shard_degree = 8\n"
                       "tensor_parallel_degree = 1\n[training]\nlocal_batch_size = 2\nseq_len = 2048\n"
                       "[activation_checkpoint]\nmode = \"full\"\n",
    "training_args.json": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "bf16": True,
                           "optim": "adamw_torch", "gradient_checkpointing": True},
    "pretrain_gpt.sh": "torchrun --nproc_per_node 8 pretrain_gpt.py --tensor-model-parallel-size 2 "
                       "--pipeline-model-parallel-size 2 --num-layers 32 --hidden-size 4096 "
                       "--num-attention-heads 32 --seq-length 2048 --micro-batch-size 1 --bf16\n",
}
ODD_SETTING_VALUES = [-1, 0, "x", None, 1e400, float("nan"), 10**30, [], {}, True, 3.5, "auto", ""]


def _mutate(rng: random.Random, data):
    """Change one setting somewhere in nested dicts and lists to an odd value (or drop it, or add an unknown one)."""
    data = json.loads(json.dumps(data))
    node = data
    while isinstance(node, (dict, list)) and node:
        key = rng.choice(list(node) if isinstance(node, dict) else range(len(node)))
        if isinstance(node[key], (dict, list)) and node[key] and rng.random() < 0.75:
            node = node[key]
            continue
        r = rng.random()
        if r < 0.7:
            node[key] = rng.choice(ODD_SETTING_VALUES)
        elif r < 0.85:
            node.pop(key)
        elif isinstance(node, dict):
            node["unknown_setting_\u03bb"] = 1
        break
    return data


_SAVED: dict[str, dict] = {}


def saved_setup(name: str) -> dict:
    """What `--save-setup` writes for `name` (memplan's own setup format, the architecture spelled out)."""
    if name not in _SAVED:
        from memplan.setups import training_setup

        _SAVED[name] = training_setup(name, gpus=8, zero=3).model_dump(mode="json", exclude_none=True)
    return _SAVED[name]


def setup_file(rng: random.Random) -> tuple[str, dict[str, FileSpec]]:
    name = rng.choice(sorted(SETUP_TEMPLATES) + ["saved-setup.json"] * 2)
    template = saved_setup(rng.choice(["llama-2-7b", "mixtral-8x7b", "gemma-2-9b", "deepseek-v3"])) \
        if name == "saved-setup.json" else SETUP_TEMPLATES[name]
    if isinstance(template, dict):
        data = _mutate(rng, template) if rng.random() < 0.7 else template
        text = json.dumps(data, allow_nan=True)
    else:
        text = template
        if rng.random() < 0.7:  # a number replaced by an odd one
            import re

            numbers = list(re.finditer(r"\b\d+\b", text))
            if numbers:
                m = rng.choice(numbers)
                text = text[:m.start()] + str(rng.choice(["-1", "0", "1e400", "x", "99999999999999999999", ".nan",
                                                          "3.5"])) + text[m.end():]
    return name, {name: FileSpec("text", text)}


RECORD = __import__("pathlib").Path(__file__).resolve().parents[2] / "profiles" / "runs" / "falcon-tiny-cpu-fp32.json"


def record_file(rng: random.Random, timing: bool = False) -> tuple[str, dict[str, FileSpec]]:
    """A `memplan profile --out` record (the one in profiles/runs), whole, with one odd field, or hand-written."""
    data = json.loads(RECORD.read_text())
    if timing:
        data["measured"]["cuda"] = {"step_seconds": 0.5, "flops_per_step": 1e15, "achieved_tflops": 400.0}
    r = rng.random()
    if r < 0.6:
        node = data["measured"]
        if timing and rng.random() < 0.6:
            node = node["cuda"]
        key = rng.choice(list(node))
        node[key] = rng.choice(ODD_SETTING_VALUES + [-5, 0.0, "600"])
    elif r < 0.75:
        data = data["measured"]  # the bare MeasuredStep
    elif r < 0.85:
        data = rng.choice([{"cuda": {"achieved_tflops": rng.choice([600, -5, 0, float("nan"), "x", None])}},
                           {"measured": None}, {"measured": []}, {}])
    name = "record.json"
    return name, {name: FileSpec("text", json.dumps(data, allow_nan=True))}
