"""`memplan estimate`: memory per GPU, CPU RAM and NVMe for training, fine-tuning (LoRA/QLoRA) or inference."""
from __future__ import annotations

import json

import click

from memplan.cli.checks import check_flag_combinations
from memplan.cli.options import (build_setup, gpu_option, json_option, pop_training_kwargs, resolve_gpu,
                                 training_options, units_option, units_of)
from memplan.cli.types import NAME, PATH, BoundedInt, NonEmptyText
from memplan.errors import MemplanError

# The whiteboard table: (label, overrides). Same model, GPU count and optimizer; only the strategy changes.
COMPARE_STRATEGIES = [
    ("fp32 (DDP)", {"precision": "fp32", "zero": 0}),
    ("mixed precision (DDP)", {"zero": 0}),
    ("ZeRO-1 (P_os)", {"zero": 1}),
    ("ZeRO-2 (P_os+g)", {"zero": 2}),
    ("ZeRO-3 (P_os+g+p)", {"zero": 3}),
    ("ZeRO-3 + CPU offload", {"zero": 3, "offload_optimizer": "cpu", "offload_params": "cpu"}),
]

INFERENCE_KEYS = ("batch", "context", "kv_dtype", "max_batch", "max_context", "prefill_chunk")
LORA_KEYS = ("lora_rank", "lora_targets", "quantize_base")


@click.command("estimate")
@training_options
@gpu_option
@click.option("--mode", type=click.Choice(["training", "inference"]), default="training", show_default=True)
@click.option("--lora-rank", type=BoundedInt(1, "rank"),
              help="Fine-tune with LoRA adapters of this rank (frozen base).")
@click.option("--lora-targets", type=NonEmptyText("a comma-separated list of module names"),
              help="Comma-separated modules for LoRA (default: PEFT's for the family; all-linear).")
@click.option("--quantize-base", type=click.Choice(["nf4", "int8"]), help="QLoRA: quantised frozen base.")
@click.option("--batch", type=BoundedInt(1, "batch"), default=1, show_default=True,
              help="Inference: concurrent sequences.")
@click.option("--context", type=BoundedInt(1, "positions"), help="Inference: tokens per sequence (prompt + generated).")
@click.option("--kv-dtype", type=NAME, default="bf16", show_default=True,
              help="Inference: KV-cache dtype (bf16, fp16, fp8).")
@click.option("--prefill-chunk", type=BoundedInt(1, "positions"), help="Inference: chunked prefill size in tokens.")
@click.option("--max-batch", is_flag=True, help="Inference: the most concurrent sequences that fit on --gpu.")
@click.option("--max-context", is_flag=True, help="Inference: the longest context that fits on --gpu.")
@click.option("--max-micro-batch", is_flag=True, help="Training: the largest micro-batch that fits on --gpu.")
@click.option("--max-seq", is_flag=True, help="Training: the longest sequence that fits on --gpu.")
@click.option("--calibration", type=PATH, help="A `memplan profile` record to calibrate with.")
@click.option("--optimizer-impl", type=click.Choice(["for-loop", "foreach", "fused"]), default="foreach",
              show_default=True, help="torch.optim implementation (its step's temporaries); foreach is torch's "
                                      "default on CUDA.")
@click.option("--compare", is_flag=True, help="One row per strategy: fp32, mixed, ZeRO-1/2/3, ZeRO-3 + offload.")
@units_option
@json_option
def estimate_command(**kwargs) -> None:
    """Estimate memory for training (or serving) MODEL.

    MODEL is a parameter count (7B, 124M, 1.3e9), a built-in profile (see `memplan models`), or a path to a Hugging
    Face config.json (or its folder).
    """
    as_json, units = kwargs.pop("as_json"), units_of(kwargs.pop("units"))
    gpu = resolve_gpu(kwargs.pop("gpu_name"))
    mode = kwargs.pop("mode")
    inference = {k: kwargs.pop(k) for k in INFERENCE_KEYS}
    lora = {k: kwargs.pop(k) for k in LORA_KEYS}
    wants_max = {k: kwargs.pop(k) for k in ("max_micro_batch", "max_seq")}
    calibration_path, compare = kwargs.pop("calibration"), kwargs.pop("compare")
    optimizer_impl = kwargs.pop("optimizer_impl")
    training = pop_training_kwargs(kwargs)
    check_flag_combinations(training, lora=lora)
    if (wants_max["max_micro_batch"] or wants_max["max_seq"] or inference["max_batch"] or inference["max_context"]) \
            and gpu is None:
        raise MemplanError("--max-micro-batch/--max-seq/--max-batch/--max-context need --gpu NAME to fit against")

    _reject_flags_of_the_other_mode(mode, training, inference, lora, wants_max, calibration_path, compare)
    if mode == "inference":
        from memplan.memory.inference import build_inference_setup, estimate_inference
        from memplan.report.inference import inference_table

        setup = build_inference_setup(**training, **inference)
        est = estimate_inference(setup, gpu, max_batch=inference["max_batch"], max_context=inference["max_context"])
        click.echo(est.model_dump_json(indent=2) if as_json else inference_table(est, units))
        return

    calibration = None
    if calibration_path:
        from memplan.memory.calibration import load_calibration

        calibration = load_calibration(calibration_path)
    from memplan.memory.estimate import estimate_memory
    from memplan.report.tables import compare_table, memory_table

    def setup_for(opts: dict):
        setup = build_setup(**opts)
        setup = setup.model_copy(update={"workload": setup.workload.model_copy(
            update={"optimizer_impl": optimizer_impl})})
        if lora["lora_rank"] or lora["quantize_base"]:
            from memplan.memory.lora import lora_spec

            setup = setup.model_copy(update={"lora": lora_spec(setup, **lora)})
        return setup

    if compare:
        rows = []
        for label, overrides in COMPARE_STRATEGIES:
            opts = {**training, "offload_optimizer": "none", "offload_params": "none", **overrides}
            rows.append((label, estimate_memory(setup_for(opts), gpu, calibration=calibration)))
        if as_json:
            click.echo(json.dumps({"strategies": [{"strategy": label, **e.model_dump(mode="json")}
                                                  for label, e in rows]}, indent=2))
        else:
            click.echo(compare_table(rows, units))
        return

    setup = setup_for(training)
    est = estimate_memory(setup, gpu, calibration=calibration)
    if wants_max["max_micro_batch"] or wants_max["max_seq"]:
        from memplan.memory.search import max_micro_batch, max_seq

        if wants_max["max_micro_batch"]:
            est.max_micro_batch = max_micro_batch(setup, gpu, calibration=calibration)
        if wants_max["max_seq"]:
            est.max_seq = max_seq(setup, gpu, calibration=calibration)
    click.echo(est.model_dump_json(indent=2) if as_json else memory_table(est, units))


# flag -> its default; a flag of the other mode set to anything else is an error, never silently ignored
TRAINING_ONLY = {"micro_batch": 1, "seq": None, "grad_accum": 1, "recompute": "none", "optimizer": "adamw",
                 "zero": 0, "offload_optimizer": "none", "offload_params": "none", "engine": "plain",
                 "grads_dtype": None, "master_dtype": None, "states_dtype": None}
INFERENCE_ONLY = {"batch": 1, "context": None, "kv_dtype": "bf16", "prefill_chunk": None, "max_batch": False,
                  "max_context": False}


def _reject_flags_of_the_other_mode(mode, training, inference, lora, wants_max, calibration, compare) -> None:
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    if mode == "inference":
        given = [k for k, default in TRAINING_ONLY.items() if training.get(k, default) != default]
        given += [k for k, v in {**lora, **wants_max}.items() if v]
        given += [k for k, v in (("calibration", calibration), ("compare", compare)) if v]
        if given:
            hint = " (use --batch and --context)" if {"micro_batch", "seq"} & set(given) else ""
            raise MemplanError(f"{', '.join(flag(k) for k in given)}: training flag(s), not used with --mode "
                               f"inference{hint}")
    else:
        given = [k for k, default in INFERENCE_ONLY.items() if inference.get(k, default) != default]
        if given:
            hint = " (use --micro-batch and --seq)" if {"batch", "context"} & set(given) else ""
            raise MemplanError(f"{', '.join(flag(k) for k in given)}: inference flag(s), need --mode inference{hint}")
