"""`memplan rl`: memory per phase, time per RL step and the split that fits for GRPO/DAPO/RLOO/PPO and DPO/KTO/ORPO
(TRL conventions; verl configs read too)."""
from __future__ import annotations

import click

from memplan.cli.options import gpu_option, json_option, units_of, units_option
from memplan.cli.types import FRACTION, NAME, PATH

POS = click.IntRange(min=1)


@click.command("rl")
@click.argument("model", metavar="MODEL", type=NAME, required=False)
@gpu_option
@click.option("--config", type=PATH, help="A TRL GRPOConfig/DPOConfig (YAML/JSON), a verl config (YAML) or an "
                                          "OpenRLHF launch script (.sh); flags override it.")
@click.option("--algorithm", type=click.Choice(["grpo", "dapo", "rloo", "ppo", "dpo", "kto", "orpo"]),
              help="RL or preference algorithm.  [default: grpo, or what --config says]")
@click.option("--framework", type=click.Choice(["trl", "verl", "openrlhf"]), help="Whose conventions.  [default: trl]")
@click.option("--prompt-length", type=POS, help="Prompt tokens (GRPO: the longest prompt).  [default: 512]")
@click.option("--completion-length", type=POS, help="Generated tokens (max_completion_length).  [default: 512]")
@click.option("--max-length", type=POS, help="DPO/KTO/ORPO: prompt + completion tokens.  [default: 1024]")
@click.option("--num-generations", "-G", type=POS, help="Completions per prompt.  [default: 8]")
@click.option("--per-device-train-batch-size", "--batch", "per_device_train_batch_size", type=POS,
              help="Sequences per GPU per micro-step (GRPO: completions; DPO: pairs).  [default: 8]")
@click.option("--gradient-accumulation-steps", "--grad-accum", "gradient_accumulation_steps", type=POS,
              help="Micro-steps per optimizer step.  [default: 1]")
@click.option("--steps-per-generation", type=POS, help="Micro-steps per generation batch.  [default: grad accum]")
@click.option("--num-iterations", type=POS, help="Updates per generation batch.  [default: 1]")
@click.option("--beta", type=float, help="KL coefficient.  [default: GRPO 0.0 (no reference), DPO 0.1]")
@click.option("--precompute-ref-log-probs/--no-precompute-ref-log-probs", default=None,
              help="DPO: reference log-probs computed once before training (no reference model).")
@click.option("--policy", type=click.Choice(["full", "lora", "qlora"]), help="What is trained.  [default: full]")
@click.option("--lora-rank", type=POS, help="LoRA rank.  [default: 16]")
@click.option("--reference", type=click.Choice(["auto", "none", "copy", "adapters-off", "precomputed"]),
              help="Reference model.  [default: auto: what TRL does for the algorithm, beta and policy]")
@click.option("--reference-model", type=NAME, help="A reference other than the policy's checkpoint (same vocabulary).")
@click.option("--reward-model", type=NAME, help="A reward model scored each rollout (profile or config path).")
@click.option("--critic/--no-critic", default=None, help="A trained value model.  [default: on for ppo]")
@click.option("--rollout", type=click.Choice(["hf", "vllm-colocate", "vllm-server"]),
              help="Rollout engine.  [default: hf (TRL use_vllm=False)]")
@click.option("--rollout-gpus", type=POS, help="vllm-server: GPUs of the rollout engine.")
@click.option("--gpu-memory-utilization", type=FRACTION, help="vLLM's share of a GPU.  [default: colocate 0.3, "
                                                              "server 0.9]")
@click.option("--sleep-level", type=click.IntRange(0, 2), help="Colocated vLLM sleep: 0 off, 1 weights to host, 2 "
                                                               "dropped.  [default: 0]")
@click.option("--vllm-tp", type=POS, help="vLLM tensor-parallel size.  [default: 1]")
@click.option("--vllm-version", type=NAME, help="vLLM release whose accounting to reproduce.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=None,
              help="Activation checkpointing.  [default: on (TRL)]")
@click.option("--model-dtype", type=click.Choice(["float32", "bfloat16", "bfloat16-mixed"]),
              help="The policy's parameters.  [default: float32: TRL loads a path in fp32 unless "
                   "model_init_kwargs.dtype]")
@click.option("--gpus", type=POS, help="Training GPUs.  [default: 1]")
@click.option("--gpus-per-node", type=POS, help="GPUs per node.  [default: 8]")
@click.option("--zero", type=click.IntRange(0, 3), help="DeepSpeed ZeRO stage.  [default: 0]")
@click.option("--no-search", is_flag=True, help="Skip the search for the changes that fit.")
@click.option("--plot", type=PATH, metavar="FILE.png", help="Also draw memory over the RL step, per phase (needs "
                                                            "matplotlib).")
@click.option("--force", is_flag=True, help="Overwrite the --plot file if it exists.")
@units_option
@json_option
def rl_command(**kw) -> None:
    """Plan RL post-training or preference tuning of MODEL: memory per phase (rollout, scoring, update) on each GPU,
    host RAM, time per RL step, and the smallest change / fastest layout that fits.

    MODEL is a built-in profile, a parameter count or a config.json path (or model_name_or_path in --config).
    """
    from memplan.answers.rl import rl
    from memplan.errors import MemplanError

    as_json, units = kw.pop("as_json"), units_of(kw.pop("units"))
    gpu, model, search = kw.pop("gpu_name"), kw.pop("model"), not kw.pop("no_search")
    plot, force = kw.pop("plot"), kw.pop("force")
    if plot is not None:
        if not plot.strip():
            raise MemplanError("--plot needs a file name, e.g. --plot rl.png")
        from memplan.report.files import check_writable

        check_writable(plot, force, what="--plot")
    if model is None and kw.get("config") is None:
        raise MemplanError("memplan rl needs MODEL or --config FILE (with model_name_or_path)")
    plan = rl(model, gpu, search_changes=search, **{k: v for k, v in kw.items() if v is not None})
    for line in plan.warnings:
        click.echo(f"memplan: warning: {line}", err=True)
    if as_json:
        click.echo(plan.model_dump_json(indent=2))
        if plot:
            from memplan.report.rl import rl_plot

            click.echo(f"memplan rl: plot written to {rl_plot(plan, plot, units, force=force)}", err=True)
        return
    from memplan.report.rl import rl_table

    click.echo(rl_table(plan, units))
    if plot:
        from memplan.report.rl import rl_plot

        click.echo(f"memplan rl: plot written to {rl_plot(plan, plot, units, force=force)}", err=True)
