"""The serving flags of `memplan estimate --mode inference`, named as vLLM names them, and the inference branch.

Defaults are left to memplan/spec/inference.py (InferenceSetup) and, for vLLM's settings, to the modelled vLLM
version and GPU (memplan/memory/vllm_rules.py): every option here defaults to None.
"""
from __future__ import annotations

import click

from memplan.cli.options import _stack
from memplan.cli.types import NAME, BoundedInt, FiniteFloat

SERVING_ENGINES = ("vllm", "hf", "sglang")

serving_options = _stack(
    click.option("--batch", type=BoundedInt(1, "batch"), help="Inference: concurrent sequences (vllm: checked against the KV "
                                                "blocks and --max-num-seqs).  [default: hf 1]"),
    click.option("--context", type=BoundedInt(1, "positions"), help="Inference: tokens per sequence, prompt + generated (vllm: also "
                                                  "--max-model-len unless given).  [default: the model's max]"),
    click.option("--prompt", type=BoundedInt(1, "positions"), help="Inference: prompt tokens per sequence."),
    click.option("--output", type=BoundedInt(0, "positions"), help="Inference: generated tokens per sequence "
                                                              "(context = prompt + output)."),
    click.option("--kv-cache-dtype", type=NAME, help="Inference: KV cache dtype as vLLM names it: auto, bfloat16, float16, "
                                          "fp8, fp8_e4m3, fp8_e5m2.  [default: auto, the model's dtype]"),
    click.option("--kv-dtype", type=NAME, help="Inference: alias of --kv-cache-dtype (bf16, fp16, fp8)."),
    click.option("--quantization", "-q", type=NAME, help="Inference: vLLM's --quantization (fp8, awq, awq_marlin, gptq, "
                                              "gptq_marlin, compressed-tensors, mxfp4, bitsandbytes).  [default: "
                                              "the config's quantization_config]"),
    click.option("--gpu-memory-utilization", type=FiniteFloat(0.0, True, 1.0, "a fraction in (0, 1]"), help="vllm: fraction of the GPU's memory vLLM may use, "
                                                              "in (0, 1].  [default: 0.92 (vLLM >= 0.20)]"),
    click.option("--max-model-len", type=BoundedInt(1, "positions"), help="vllm: longest request vLLM admits.  [default: --context, "
                                                        "else the model's max positions]"),
    click.option("--max-num-seqs", type=BoundedInt(1, "batch"), help="vllm: sequences per scheduler step.  [default: vLLM's, by "
                                                       "GPU: 256 or 1024]"),
    click.option("--max-num-batched-tokens", type=BoundedInt(1, "positions"), help="vllm: tokens per step, the chunked-prefill size."
                                                                 "  [default: vLLM's, by GPU: 2048 or 8192]"),
    click.option("--block-size", type=BoundedInt(1, 1 << 20), help="vllm: tokens per KV block (a multiple of 16 on CUDA).  [default: "
                                                "16; MLA 64 on Hopper, 128 on Blackwell]"),
    click.option("--enforce-eager", is_flag=True, default=None, help="vllm: no CUDA graphs."),
    click.option("--enable-expert-parallel", is_flag=True, default=None,
                 help="vllm: shard MoE experts over the TP x DP ranks (whole experts) instead of splitting each."),
    click.option("--mem-fraction-static", type=FiniteFloat(0.0, True, 1.0, "a fraction in (0, 1]"),
                 help="sglang: (weights + KV pool) as a share of the memory free before the load.  [default: "
                      "SGLang's, by GPU memory and TP]"),
    click.option("--vllm-version", type=NAME, help="vllm: the release whose accounting to reproduce, 0.8.5 ... 0.34; add +docker for the "
                                        "vllm/vllm-openai image (FlashInfer installed: 0.10-0.11 sample without a sort).  "
                                        "[default: 0.33.0]"),
    click.option("--vllm-entrypoint", type=click.Choice(["serve", "llm"]),
                 help="vllm: `vllm serve` or the offline LLM class (batch defaults differ).  [default: serve]"),
    click.option("--prefill-chunk", type=BoundedInt(1, "positions"), help="hf: chunked prefill size in tokens."),
    click.option("--max-batch", is_flag=True, help="Inference: the most concurrent sequences (vllm: max concurrency "
                                                   "at --context, capped by --max-num-seqs)."),
    click.option("--max-context", is_flag=True, help="Inference: the longest context (vllm: the largest "
                                                     "--max-model-len that starts)."),
)

# the option names serving_options adds, for the command to split them out
SERVING_OPTION_KEYS = ("batch", "context", "prompt", "output", "kv_cache_dtype", "kv_dtype", "quantization",
                       "gpu_memory_utilization", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
                       "block_size", "enforce_eager", "enable_expert_parallel", "mem_fraction_static", "vllm_version", "vllm_entrypoint",
                       "prefill_chunk", "max_batch", "max_context")


def allow_serving_engines(command: click.Command) -> click.Command:
    """--engine is the Layout's training convention (plain, deepspeed, megatron, fsdp); with --mode inference it
    names the serving engine (vllm, hf).  Widen its choices here; setups.py checks the value against the mode."""
    for param in command.params:
        if param.name == "engine" and isinstance(param.type, click.Choice):
            choices = list(param.type.choices) + [e for e in SERVING_ENGINES if e not in param.type.choices]
            param.type = click.Choice(choices)
            param.help = (param.help or "").rstrip(".") + "; with --mode inference: vllm (default), sglang or hf."
    return command


def run_inference(gpu_name: str | None, training: dict, serving: dict, as_json: bool, units) -> None:
    import memplan.api as api
    from memplan.report.inference import inference_table

    extra = {k: v for k, v in serving.items() if v is not None and k not in ("max_batch", "max_context")}
    if "mem_fraction_static" in extra:  # SGLang's name for the fraction the setup keeps as gpu_memory_utilization
        if training.get("engine") != "sglang":
            raise click.UsageError("--mem-fraction-static is SGLang's; with --engine vllm use "
                                   "--gpu-memory-utilization")
        extra["gpu_memory_utilization"] = extra.pop("mem_fraction_static")
    est = api.estimate_inference(gpu=gpu_name, max_batch=bool(serving.get("max_batch")),
                                 max_context=bool(serving.get("max_context")), **training, **extra)
    click.echo(est.model_dump_json(indent=2) if as_json else inference_table(est, units))
