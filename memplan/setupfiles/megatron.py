"""Megatron-LM command-line arguments: write them for a layout, or read them back from a launch script.

Names and meanings are Megatron-LM's (NVIDIA/Megatron-LM@d98e8a64ddf34856e74b24714e3bedb2f5a39553):
megatron/training/arguments.py (and the dataclass fields it turns into flags, ArgumentGroupFactory:
megatron/core/model_parallel_config.py tensor/pipeline/context/expert_model_parallel_size, sequence_parallel;
megatron/core/transformer/transformer_config.py recompute_granularity/method/num_layers).  global batch =
micro-batch * data-parallel size * microbatches (validate_args: --global-batch-size defaults to
micro * dp).  --use-distributed-optimizer shards the optimizer (ZeRO-1); Megatron-FSDP
(--use-megatron-fsdp --data-parallel-sharding-strategy optim_grads | optim_grads_params) is ZeRO-2/3.
--optimizer adam is AdamW (decoupled weight decay, megatron/core/optimizer/__init__.py); sgd has
--sgd-momentum 0.9 by default.
"""
from __future__ import annotations

import re
import shlex

from memplan.setupfiles._collect import Collector
from memplan.setupfiles.results import EmittedSetup, EngineLayout

# flag -> (memplan field, kind): every flag this module writes or reads, as Megatron spells it
FLAGS = {
    "--tensor-model-parallel-size": ("tp", int), "--pipeline-model-parallel-size": ("pp", int),
    "--context-parallel-size": ("cp", int), "--expert-model-parallel-size": ("ep", int),
    "--num-virtual-stages-per-pipeline-rank": ("virtual_stages", int),
    "--sequence-parallel": ("sequence_parallel", bool), "--micro-batch-size": ("micro_batch", int),
    "--global-batch-size": ("global_batch", int), "--seq-length": ("seq", int),
    "--use-distributed-optimizer": ("zero", bool), "--use-megatron-fsdp": ("zero", bool),
    "--data-parallel-sharding-strategy": ("zero", str), "--recompute-granularity": ("recompute", str),
    "--recompute-activations": ("recompute", bool), "--recompute-method": (None, str),
    "--recompute-num-layers": (None, int), "--bf16": ("precision", bool), "--fp16": ("precision", bool),
    "--fp8-format": ("precision", str), "--optimizer": ("optimizer", str), "--sgd-momentum": (None, float),
    "--optimizer-cpu-offload": ("offload_optimizer", bool), "--use-precision-aware-optimizer": (None, bool),
    "--num-layers-per-virtual-pipeline-stage": (None, int), "--ckpt-format": (None, str),
    "--decoder-first-pipeline-num-layers": ("first_stage_layers", int),
    "--decoder-last-pipeline-num-layers": ("last_stage_layers", int),
    "--expert-tensor-parallel-size": ("etp", int),
    "--grad-reduce-in-bf16": ("grads_dtype", bool),
}
# torchrun's (torch/distributed/run.py), for the GPU count: both spellings are accepted there
LAUNCH = {"--nproc-per-node": "gpus_per_node", "--nproc_per_node": "gpus_per_node", "--nnodes": "nodes"}
SHARDING = {"no_shard": 0, "optim": 1, "optim_grads": 2, "optim_grads_params": 3}
# a whole number as a flag's value: ASCII digits only (str.isdigit() is also true of '²' and '٣', which int()
# refuses or reads as another number), at most 9 of them (no degree, batch or layer count comes near 10^9)
_WHOLE = re.compile(r"[0-9]{1,9}")
MAX_WORD = 64 * 1024  # characters in one word after $VAR expansion: `A=$B$B$B...` chains grow exponentially
MAX_EXPANDED = 4 * 1024 * 1024  # characters in all words after expansion


def emit(layout: EngineLayout) -> EmittedSetup:
    warnings: list[str] = []
    args: list[str] = [f"--tensor-model-parallel-size {layout.tp}", f"--pipeline-model-parallel-size {layout.pp}"]
    if layout.virtual_stages > 1:
        args.append(f"--num-virtual-stages-per-pipeline-rank {layout.virtual_stages}")
    if layout.cp > 1:
        args.append(f"--context-parallel-size {layout.cp}")
    if layout.ep > 1:
        args.append(f"--expert-model-parallel-size {layout.ep}")
    for flag, value in (("--decoder-first-pipeline-num-layers", layout.first_stage_layers),
                        ("--decoder-last-pipeline-num-layers", layout.last_stage_layers)):
        if value is not None:
            args.append(f"{flag} {value}")
    if layout.sequence_parallel:
        args.append("--sequence-parallel")
    if layout.recompute == "selective":
        args.append("--recompute-granularity selective")
    elif layout.recompute == "full":
        args.append("--recompute-granularity full --recompute-method uniform --recompute-num-layers 1")
    args.append(f"--micro-batch-size {layout.micro_batch}")
    args.append(f"--global-batch-size {layout.global_batch}")
    if layout.seq:
        args.append(f"--seq-length {layout.seq}")
    if layout.zero == 1:
        args.append("--use-distributed-optimizer")
    elif layout.zero in (2, 3):
        args.append("--use-megatron-fsdp --data-parallel-sharding-strategy "
                    + ("optim_grads" if layout.zero == 2 else "optim_grads_params")
                    + " --ckpt-format fsdp_dtensor")  # validate_args: Megatron-FSDP requires this format
    base = layout.precision.split("[", 1)[0]
    if base in ("bf16-mixed", "amp-bf16", "bf16"):
        args.append("--bf16")
        if base != "bf16-mixed":
            warnings.append(f"precision {layout.precision}: Megatron's --bf16 keeps fp32 main weights and grads "
                            "in the optimizer (bf16-mixed)")
    elif base in ("fp16-mixed", "amp-fp16"):
        args.append("--fp16")
    elif base == "fp8-mixed":
        args.append("--bf16 --fp8-format hybrid")
    if "gradients=bf16" in layout.precision and base in ("bf16-mixed", "fp8-mixed"):
        args.append("--grad-reduce-in-bf16")
    optimizer = {"adamw": "adam", "adam": "adam", "lion": "lion", "sgd": "sgd", "sgd-momentum": "sgd"}
    if layout.optimizer in optimizer:
        args.append(f"--optimizer {optimizer[layout.optimizer]}" + (" --sgd-momentum 0" if layout.optimizer == "sgd"
                                                                     else ""))
    else:
        warnings.append(f"optimizer {layout.optimizer}: not one of Megatron's (adam, sgd, lion, muon, soap)")
    if layout.offload_optimizer == "cpu":
        args.append("--optimizer-cpu-offload --use-precision-aware-optimizer")
    elif layout.offload_optimizer == "nvme":
        warnings.append("Megatron cannot offload the optimizer to NVMe")
    if layout.offload_params != "none":
        warnings.append("Megatron does not offload parameters (only --optimizer-cpu-offload)")
    if layout.gpus % layout.gpus_per_node and layout.gpus > layout.gpus_per_node:
        warnings.append(f"{layout.gpus} GPUs do not fill whole nodes of {layout.gpus_per_node}")
    per_node = min(layout.gpus, layout.gpus_per_node)
    text = (f"# Megatron-LM arguments from memplan ({layout.model or 'model'}: {layout.gpus} GPUs = "
            f"dp {layout.dp} x tp {layout.tp} x pp {layout.pp} x cp {layout.cp}).\n"
            "# Use: torchrun \"${MEMPLAN_TORCHRUN[@]}\" pretrain_gpt.py \"${MEMPLAN_ARGS[@]}\" "
            "<model, data and optimizer flags>\n"
            f"MEMPLAN_TORCHRUN=(--nproc-per-node {per_node} --nnodes {-(-layout.gpus // per_node)})\n"
            "MEMPLAN_ARGS=(\n" + "".join(f"    {a}\n" for a in args) + ")\n")
    return EmittedSetup(format="megatron", text=text, filename="megatron_args.sh", warnings=warnings)


def read(c: Collector) -> None:
    """`c.data` holds {"argv": [tokens]} (see tokens()): the flags above are read, every other one ignored."""
    argv: list[str] = c.data.get("argv", [])
    values: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        tok = argv[i]
        flag, _, inline = tok.partition("=")
        if flag in LAUNCH:
            value = inline or (argv[i + 1] if i + 1 < len(argv) else "")
            i += 0 if inline else 1
            values[flag] = value
        elif flag in FLAGS:
            kind = FLAGS[flag][1]
            if kind is bool:
                values[flag] = True
            else:
                value = inline or (argv[i + 1] if i + 1 < len(argv) else "")
                if not inline:
                    i += 1
                values[flag] = value
        i += 1
    c.data = {k: v for k, v in values.items()}  # the keys the Collector reports are the flags
    c.set("engine", "megatron", "(format)", note="Megatron-LM arguments")
    _launch(c, values)
    for flag, value in values.items():
        field, kind = FLAGS.get(flag, (None, None))
        if kind is int:
            if not _whole(value) or int(value) < (0 if field in ("first_stage_layers", "last_stage_layers") else 1):
                raise c.error(flag, f"expected a whole number, got {c.show(value)} (a shell variable the script does "
                                    "not set to a number?)")
            if field:
                c.set(field, int(value), flag)
            else:
                c.consult(flag, {"--recompute-num-layers": "recompute"}.get(flag, "virtual_stages"))
    strategy = values.get("--data-parallel-sharding-strategy", "optim_grads_params")
    if values.get("--use-megatron-fsdp"):
        if strategy not in SHARDING:
            raise c.error("--data-parallel-sharding-strategy", f"{strategy!r} is not one of {', '.join(SHARDING)}")
        c.set("zero", SHARDING[strategy], "--data-parallel-sharding-strategy", note="Megatron-FSDP")
    elif values.get("--use-distributed-optimizer"):
        c.set("zero", 1, "--use-distributed-optimizer", note="the distributed optimizer shards the optimizer states")
    else:
        c.default("zero", 0, "--use-distributed-optimizer", "not given: no sharding")
    c.consult_all("zero", "--use-megatron-fsdp", "--data-parallel-sharding-strategy", "--ckpt-format")
    granularity = values.get("--recompute-granularity")
    if granularity is not None:
        if granularity not in ("full", "selective"):
            raise c.error("--recompute-granularity", f"{granularity!r} is not full or selective")
        c.set("recompute", granularity, "--recompute-granularity")
        if granularity == "full" and str(values.get("--recompute-num-layers", "1")) != "1":
            c.warn(f"{c.path}: --recompute-num-layers {values['--recompute-num-layers']}: memplan recomputes "
                   "layer by layer (num-layers 1)")
    elif values.get("--recompute-activations"):
        c.set("recompute", "selective", "--recompute-activations", note="= --recompute-granularity selective")
    else:
        c.default("recompute", "none", "--recompute-granularity", "not given: no recompute")
    c.consult_all("recompute", "--recompute-activations", "--recompute-method")
    if values.get("--sequence-parallel"):
        c.set("sequence_parallel", True, "--sequence-parallel")
    if values.get("--fp8-format"):
        c.set("precision", "fp8-mixed", "--fp8-format")
    elif values.get("--bf16"):
        c.set("precision", "bf16-mixed", "--bf16", note="bf16 weights, fp32 main weights and grads in the optimizer")
    elif values.get("--fp16"):
        c.set("precision", "fp16-mixed", "--fp16")
    else:
        c.default("precision", "fp32", "--bf16", "neither --bf16 nor --fp16: fp32")
    c.consult_all("precision", "--bf16", "--fp16", "--fp8-format")
    if values.get("--grad-reduce-in-bf16"):
        c.set("grads_dtype", "bf16", "--grad-reduce-in-bf16",
              note="bf16 main_grad buffer, reduced in bf16 (engines/megatron.py)")
    c.consult("--grad-reduce-in-bf16", "grads_dtype", "not given: fp32 main_grad buffer")
    name = str(values.get("--optimizer", "adam"))
    momentum = _number(c, "--sgd-momentum", values.get("--sgd-momentum", "0.9"))
    c.consult_all("optimizer", "--sgd-momentum", "--use-precision-aware-optimizer")
    chosen = {"adam": "adamw", "lion": "lion"}.get(name) or (
        ("sgd" if momentum == 0 else "sgd-momentum") if name == "sgd" else None)
    if chosen:
        c.set("optimizer", chosen, "--optimizer", default="--optimizer" not in values,
              note="Megatron's adam is AdamW" if name == "adam" else "")
    else:
        c.ignore("--optimizer", f"no memplan optimizer for {name!r}")
    if values.get("--optimizer-cpu-offload"):
        c.set("offload_optimizer", "cpu", "--optimizer-cpu-offload")
    _accumulation(c, values)
    c.finish()


def _whole(value) -> bool:
    return isinstance(value, str) and _WHOLE.fullmatch(value) is not None


def _number(c: Collector, flag: str, value) -> float:
    """A real-valued flag (--sgd-momentum 0.9): finite, or one line naming the flag."""
    import math

    try:
        number = float(value) if isinstance(value, str) and len(value) < 40 else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise c.error(flag, f"expected a number, got {c.show(value)}")
    return number


def _launch(c: Collector, values: dict) -> None:
    per_node_key = next((k for k in ("--nproc-per-node", "--nproc_per_node") if k in values), None)
    nodes = values.get("--nnodes", "1")
    for key in (per_node_key, "--nnodes"):
        if key in values and not _whole(values[key]):
            raise c.error(key, f"expected a whole number, got {c.show(values[key])} (a shell variable the script does "
                               "not set to a number?)")
    if per_node_key is not None:
        per_node = int(values[per_node_key])
        c.set("gpus_per_node", per_node, per_node_key)
        c.set("gpus", per_node * int(nodes), "--nnodes" if "--nnodes" in values else per_node_key,
              note=f"{per_node} per node x {nodes} node(s)")


def _accumulation(c: Collector, values: dict) -> None:
    """global = micro * dp * microbatches (megatron/training/arguments.py validate_args)."""
    k = c.kwargs
    if "global_batch" not in k or "micro_batch" not in k or "gpus" not in k:
        return
    dp = k["gpus"] // (k.get("tp", 1) * k.get("pp", 1) * k.get("cp", 1))
    if dp < 1 or k["global_batch"] % (k["micro_batch"] * dp):
        raise c.error("--global-batch-size", f"{k['global_batch']} is not --micro-batch-size {k['micro_batch']} "
                                             f"times the data-parallel size {dp} times a whole number")
    c.set("grad_accum", k["global_batch"] // (k["micro_batch"] * dp), "--global-batch-size",
          note=f"global / (micro-batch * data-parallel size {dp})")


def tokens(text: str, where: str = "the launch script") -> list[str]:
    """The words of a launch script: comments and line continuations removed, and `$NAME`/`${NAME}` replaced
    where the script sets NAME to a literal earlier (GPUS_PER_NODE=8 ... --nproc_per_node $GPUS_PER_NODE).

    Linear in the script's length (shlex reads it once; each word is expanded once), and bounded: a word that
    expands past MAX_WORD characters, or all of them past MAX_EXPANDED (`B=$A$A$A$A`, `C=$B$B$B$B`, ...: four
    times longer at each step), is refused with the variable's name."""
    from memplan.errors import MemplanError

    try:
        lexer = shlex.shlex(text.replace("\\\n", " "), posix=True, punctuation_chars=True)  # ( ) ; | apart
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError as exc:
        raise MemplanError(f"{where}: cannot split the script into arguments ({exc})") from None
    known: dict[str, str] = {}
    out: list[str] = []
    total = 0

    def expand(m: re.Match) -> str:
        return known.get(m.group(1), m.group(0))

    for word in words:
        names = _VARIABLE.findall(word)
        if names:
            grown = len(word) + sum(len(known.get(n, "")) for n in names)
            if grown > MAX_WORD:
                raise MemplanError(f"{where}: ${names[0]} expands to over {MAX_WORD // 1024} KiB in one word (shell "
                                   "variables built from each other); not a launch script memplan reads")
            word = _VARIABLE.sub(expand, word)
        total += len(word)
        if total > MAX_EXPANDED:
            raise MemplanError(f"{where}: the script expands to over {MAX_EXPANDED // 2**20} MiB of arguments; not a "
                               "launch script memplan reads")
        assignment = _ASSIGNMENT.fullmatch(word)
        if assignment:
            known[assignment.group(1)] = assignment.group(2)
        out.append(word)
    return out


_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=([^$()]+)")
