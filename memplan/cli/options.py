"""Click options shared by estimate, time, plan and profile, and the one function that turns them into a setup.

Every command that takes a training setup decorates itself with `training_options` and calls `build_setup(**kw)`;
so a flag means the same thing everywhere and is defined once.
"""
from __future__ import annotations

from collections.abc import Callable

import click
from pydantic import ValidationError

from memplan.cli.types import NAME, BoundedInt
from memplan.errors import MemplanError
from memplan.spec.units import Units

POSITIVE = click.IntRange(min=1)

ARCH_FLAGS = {
    # flag name -> Architecture field
    "layers": "n_layers", "hidden": "hidden_size", "heads": "n_heads", "kv_heads": "n_kv_heads",
    "head_dim": "head_dim", "ffn": "ffn_hidden_size", "vocab": "vocab_size", "max_positions": "max_positions",
    "mlp": "mlp", "norm": "norm", "tied": "tied_embeddings", "experts": "n_experts", "top_k": "experts_per_token",
}


def _stack(*decorators: Callable) -> Callable:
    def apply(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


model_argument = click.argument("model", metavar="MODEL", type=NAME)

architecture_options = _stack(
    click.option("--layers", type=BoundedInt(1, "layers"),
                 help="Transformer layers (builds or overrides an architecture)."),
    click.option("--hidden", type=BoundedInt(1, "hidden"), help="Hidden size."),
    click.option("--heads", type=BoundedInt(1, "heads"), help="Attention heads."),
    click.option("--kv-heads", type=BoundedInt(1, "heads"), help="Key/value heads (GQA/MQA)."),
    click.option("--head-dim", type=BoundedInt(1, "head_dim"), help="Head dimension (default hidden/heads)."),
    click.option("--ffn", type=BoundedInt(1, "ffn"), help="MLP intermediate size."),
    click.option("--vocab", type=BoundedInt(1, "vocab"), help="Vocabulary size."),
    click.option("--max-positions", type=BoundedInt(1, "positions"), help="Maximum positions (context)."),
    click.option("--mlp", type=click.Choice(["gelu", "swiglu"]), help="MLP kind."),
    click.option("--norm", type=click.Choice(["layernorm", "rmsnorm"]), help="Norm kind."),
    click.option("--tied/--untied", default=None, help="Tie input embeddings and LM head."),
    click.option("--experts", type=BoundedInt(0, "experts"), help="MoE experts per layer."),
    click.option("--top-k", type=BoundedInt(1, "experts"), help="MoE experts per token."),
)

precision_options = _stack(
    click.option("--precision", "-p", type=NAME, default="bf16-mixed", show_default=True,
                 help="Recipe: fp32, amp-bf16, amp-fp16, bf16-mixed, fp16-mixed, bf16, fp8-mixed."),
    click.option("--weights-dtype", type=NAME, help="Override the stored weights' dtype."),
    click.option("--grads-dtype", type=NAME, help="Override the gradients' dtype (fp32: Megatron's 18 B/param)."),
    click.option("--master-dtype", type=NAME,
                 help="Override the master weights: fp32 or none (fp32 + master: 20 B/param)."),
    click.option("--states-dtype", type=NAME, help="Override the optimizer states' dtype."),
    click.option("--optimizer", "-o", type=NAME, default="adamw", show_default=True,
                 help="adamw, adam, sgd, sgd-momentum, lion, adafactor, adamw-8bit."),
)

parallel_options = _stack(
    click.option("--gpus", "-n", type=BoundedInt(1, "gpus"), default=1, show_default=True, help="Total GPUs."),
    click.option("--gpus-per-node", type=BoundedInt(1, "gpus_per_node"), default=8, show_default=True),
    click.option("--tp", type=BoundedInt(1, "gpus"), default=1, show_default=True, help="Tensor-parallel size."),
    click.option("--pp", type=BoundedInt(1, "gpus"), default=1, show_default=True, help="Pipeline-parallel size."),
    click.option("--sequence-parallel/--no-sequence-parallel", default=False, help="Megatron sequence parallelism."),
    click.option("--virtual-stages", type=BoundedInt(1, "layers"), default=1, show_default=True,
                 help="Interleaved 1F1B model chunks per pipeline rank."),
    click.option("--zero", "-z", type=click.IntRange(0, 3), default=0, show_default=True, help="ZeRO stage 0-3."),
    click.option("--offload-optimizer", type=click.Choice(["none", "cpu", "nvme"]), default="none",
                 show_default=True, help="ZeRO-Offload / ZeRO-Infinity optimizer offload."),
    click.option("--offload-params", type=click.Choice(["none", "cpu", "nvme"]), default="none",
                 show_default=True, help="Parameter offload (needs --zero 3)."),
    click.option("--engine", type=click.Choice(["plain", "deepspeed", "megatron", "fsdp"]), default="plain",
                 show_default=True, help="Accounting convention of a real engine."),
)

workload_options = _stack(
    click.option("--micro-batch", "-b", type=BoundedInt(1, "batch"), default=1, show_default=True,
                 help="Sequences per GPU step."),
    click.option("--seq", "-s", type=BoundedInt(1, "positions"),
                 help="Sequence length (default: the model's max positions)."),
    click.option("--grad-accum", type=BoundedInt(1, "batch"), default=1, show_default=True,
                 help="Gradient accumulation steps."),
    click.option("--recompute", type=click.Choice(["none", "selective", "full"]), default="none", show_default=True,
                 help="Activation recomputation."),
    click.option("--attention", type=click.Choice(["eager", "sdpa", "flash"]), default="sdpa", show_default=True,
                 help="Attention implementation."),
    click.option("--implementation", type=NAME, default="hf", show_default=True,
                 help="Activation accounting profile (profiles/implementations): hf, megatron, ..."),
)

training_options = _stack(model_argument, architecture_options, precision_options, parallel_options,
                          workload_options)

gpu_option = click.option("--gpu", "-g", "gpu_name", type=NAME,
                          help="GPU profile name (see `memplan gpus`), for the verdict.")
units_option = click.option("--units", type=click.Choice(["GiB", "GB"], case_sensitive=False), default="GiB",
                            show_default=True, help="GiB = 2^30 bytes, GB = 10^9 bytes.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")

TRAINING_KEYS = ("model", "precision", "weights_dtype", "grads_dtype", "master_dtype", "states_dtype", "optimizer",
                 "gpus", "gpus_per_node", "tp", "pp", "sequence_parallel", "virtual_stages", "zero",
                 "offload_optimizer", "offload_params", "engine", "micro_batch", "seq", "grad_accum", "recompute",
                 "attention", "implementation", *ARCH_FLAGS)


def pop_training_kwargs(kwargs: dict) -> dict:
    """Split the training flags out of a command's kwargs (the rest are the command's own)."""
    return {k: kwargs.pop(k) for k in TRAINING_KEYS if k in kwargs}


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}"


def build_setup(**kw):
    """TrainingSetup from CLI keyword arguments (the names of the flags above)."""
    from memplan.catalog import resolve_model
    from memplan.spec.setup import TrainingSetup
    from memplan.spec.training import Parallelism, Workload, get_optimizer, get_recipe

    overrides = {field: kw.get(flag) for flag, field in ARCH_FLAGS.items()}
    model = resolve_model(kw["model"], overrides)
    recipe = get_recipe(kw.get("precision", "bf16-mixed"), weights=kw.get("weights_dtype"),
                        gradients=kw.get("grads_dtype"), master_weights=kw.get("master_dtype"),
                        optimizer_states=kw.get("states_dtype"))
    try:
        parallel = Parallelism(
            gpus=kw.get("gpus", 1), gpus_per_node=kw.get("gpus_per_node", 8), tp=kw.get("tp", 1),
            pp=kw.get("pp", 1), sequence_parallel=kw.get("sequence_parallel", False),
            virtual_stages=kw.get("virtual_stages", 1), zero=kw.get("zero", 0),
            offload_optimizer=kw.get("offload_optimizer", "none"), offload_params=kw.get("offload_params", "none"),
            engine=kw.get("engine", "plain"))
        workload = Workload(micro_batch=kw.get("micro_batch", 1), seq=kw.get("seq"), grad_accum=kw.get("grad_accum", 1),
                            recompute=kw.get("recompute", "none"), attention=kw.get("attention", "sdpa"),
                            implementation=kw.get("implementation", "hf"))
        return TrainingSetup(model=model, recipe=recipe, optimizer=get_optimizer(kw.get("optimizer", "adamw")),
                             parallel=parallel, workload=workload)
    except ValidationError as exc:
        raise MemplanError(_one_line(exc)) from None


def resolve_gpu(name: str | None):
    if not name:
        return None
    from memplan.catalog import get_gpu

    return get_gpu(name)


def resolve_gpu_for_device(name: str | None, device: str, progress: Callable[[str], None]):
    """--gpu NAME, else on cuda the profile matching the visible device's name (torch imported lazily)."""
    gpu = resolve_gpu(name)
    if gpu is None and device == "cuda":
        import torch

        from memplan.catalog import get_gpu

        try:
            gpu = get_gpu(torch.cuda.get_device_name())
        except MemplanError:
            progress(f"no GPU profile matches {torch.cuda.get_device_name()!r}: no peaks or capacity to compare with")
    return gpu


def units_of(text: str) -> Units:
    return Units.GB if text.lower() == "gb" else Units.GiB
