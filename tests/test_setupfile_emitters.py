"""Writing a layout in each engine's format, checked by the engine's own schema where it installs on CPU:

- DeepSpeed: deepspeed.runtime.config.DeepSpeedConfig (deepspeed 0.19.8, in the dev extra) parses each
  ds_config.json and derives the same batch sizes, ZeRO stage, offload devices and precision (in a subprocess:
  importing deepspeed sets up its accelerator).
- accelerate: its ClusterConfig loads the YAML (unknown keys are an error there) and `accelerate launch`'s own
  argument handling (_validate_launch_command) turns it into the launch arguments asserted below.
- torchtitan: its JobConfig field names, restated from torchtitan/config/job_config.py at the commit cited in
  memplan/setupfiles/torchtitan.py (torchtitan needs another torch build, so it is not installed here).
- Megatron-LM: its argument names, restated from megatron/training/arguments.py (and the config dataclasses it
  turns into flags) at the commit cited in memplan/setupfiles/megatron.py; and `bash -n` on the snippet.
Then each emitted file is read back: the layout comes back as it went out, as far as the format can say it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from memplan.errors import MemplanError
from memplan.setupfiles import EngineLayout, emit_setup, read_setup_file, write_setup_file

LAYOUTS = {
    "zero3-offload": dict(model="llama-2-7b", gpus=64, zero=3, offload_optimizer="cpu", offload_params="cpu",
                          micro_batch=2, grad_accum=4, recompute="full", precision="bf16-mixed", seq=4096),
    "zero2-tp": dict(gpus=16, tp=2, zero=2, micro_batch=4, precision="fp16-mixed", optimizer="lion"),
    "zero1": dict(gpus=8, zero=1, precision="amp-bf16", optimizer="adam"),
    "nvme": dict(gpus=4, zero=3, offload_optimizer="nvme", offload_params="nvme", precision="bf16"),
    "ddp": dict(gpus=8, micro_batch=8, grad_accum=2, precision="fp32"),
}


def _emit_and_read(tmp_path: Path, layout: dict, fmt: str):
    emitted = emit_setup(layout, fmt)
    path = tmp_path / emitted.filename
    path.write_text(emitted.text)
    return emitted, read_setup_file(path, format=fmt)


# ---- DeepSpeed --------------------------------------------------------------------------------------------------
DS_CHECK = r"""
import json, re, sys
import deepspeed.runtime.config as C
from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
from deepspeed.runtime.zero.offload_config import DeepSpeedZeroOffloadOptimizerConfig, DeepSpeedZeroOffloadParamConfig
from deepspeed.runtime.precision_config import DeepSpeedBF16Config, DeepSpeedFP16Config
from deepspeed.runtime.tensor_parallel.config import TPTrainingConfig
import deepspeed.runtime.constants as K

C.dist.get_rank = lambda *a, **k: 0   # no process group here: the data-parallel size comes from the mpu below

class MPU:
    def __init__(self, dp): self.dp = dp
    def get_data_parallel_world_size(self): return self.dp

out = []
for config, dp in json.loads(sys.stdin.read()):
    c = C.DeepSpeedConfig(config, mpu=MPU(dp))
    z = c.zero_config
    out.append({"train_batch_size": c.train_batch_size, "micro": c.train_micro_batch_size_per_gpu,
                "gas": c.gradient_accumulation_steps, "stage": int(c.zero_optimization_stage),
                "offload_optimizer": str(getattr(z.offload_optimizer.device, "value", z.offload_optimizer.device))
                                     if z.offload_optimizer else "none",
                "offload_param": str(getattr(z.offload_param.device, "value", z.offload_param.device))
                                 if z.offload_param else "none",
                "bf16": c.bfloat16_config.enabled, "fp16": c.float16_config.enabled,
                "optimizer": c.optimizer_name, "autotp": c.tensor_parallel_config.autotp_size})

def names(model):
    return sorted({n for n, f in model.model_fields.items()} | {f.alias for f in model.model_fields.values() if f.alias})

schema = {"zero_optimization": names(DeepSpeedZeroConfig),
          "zero_optimization.offload_optimizer": names(DeepSpeedZeroOffloadOptimizerConfig),
          "zero_optimization.offload_param": names(DeepSpeedZeroOffloadParamConfig),
          "bf16": names(DeepSpeedBF16Config), "fp16": names(DeepSpeedFP16Config),
          "tensor_parallel": names(TPTrainingConfig),
          "top": sorted({v for k, v in vars(K).items() if k.isupper() and isinstance(v, str)}
                        # keys runtime/config.py reads by their literal name (e.g. Ulysses' sequence_parallel_size)
                        | set(re.findall(r"[\"']([a-z_]+)[\"'] in (?:config|param_dict)", open(C.__file__).read())))}
print(json.dumps({"configs": out, "schema": schema}))
"""


@pytest.fixture(scope="module")
def deepspeed_check() -> dict:
    """DeepSpeed's reading of every LAYOUTS config, and its config schema (one subprocess for both)."""
    pytest.importorskip("deepspeed")
    layouts = [EngineLayout.model_validate(v) for v in LAYOUTS.values()]
    configs = [(json.loads(emit_setup(layout, "deepspeed").text), layout.dp) for layout in layouts]
    done = subprocess.run([sys.executable, "-c", DS_CHECK], input=json.dumps(configs), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"layouts": layouts, **json.loads(done.stdout.strip().splitlines()[-1])}


def test_deepspeed_accepts_what_memplan_writes(deepspeed_check):
    for layout, got in zip(deepspeed_check["layouts"], deepspeed_check["configs"]):
        assert got["train_batch_size"] == layout.micro_batch * layout.grad_accum * layout.dp
        assert (got["micro"], got["gas"], got["stage"]) == (layout.micro_batch, layout.grad_accum, layout.zero)
        assert (got["offload_optimizer"], got["offload_param"]) == (layout.offload_optimizer, layout.offload_params)
        base = layout.precision
        assert got["bf16"] == (base in ("bf16-mixed", "bf16")) and got["fp16"] == (base == "fp16-mixed")
        assert got["optimizer"] == layout.optimizer and got["autotp"] == (layout.tp if layout.tp > 1 else 0)


def test_deepspeed_keys_memplan_reads_are_deepspeeds(deepspeed_check):
    """Every ds_config key the reader looks up is a field of DeepSpeed's config models (or a top-level key)."""
    from tests.test_setupfile_readers import keys_named_in

    from memplan.setupfiles import deepspeed

    schema = deepspeed_check["schema"]
    for key in keys_named_in(deepspeed) | {"zero_optimization.offload_optimizer.device",
                                           "zero_optimization.offload_param.device",
                                           "zero_optimization.offload_optimizer.pin_memory"}:
        section, _, name = key.rpartition(".")
        if section in schema:
            assert name in schema[section], key
        elif not section:
            assert key in schema["top"] or key in schema, key
        else:
            assert section in ("optimizer", "optimizer.params", "torch_autocast", "bfloat16"), key


@pytest.mark.parametrize("name", ["zero3-offload", "zero2-tp", "zero1", "nvme", "ddp"])
def test_deepspeed_round_trip(tmp_path, name):
    layout = EngineLayout.model_validate(LAYOUTS[name])
    _, back = _emit_and_read(tmp_path, LAYOUTS[name], "deepspeed")
    s = back.setup
    assert (s.gpus, s.tp or 1, s.zero, s.micro_batch, s.grad_accum, s.precision, s.optimizer) == (
        layout.gpus, layout.tp, layout.zero, layout.micro_batch, layout.grad_accum, layout.precision,
        layout.optimizer)
    assert (s.offload_optimizer or "none", s.offload_params or "none") == (layout.offload_optimizer,
                                                                           layout.offload_params)


# ---- accelerate -------------------------------------------------------------------------------------------------
ACCELERATE = {
    "fsdp-zero3-offload": (dict(gpus=16, zero=3, offload_optimizer="cpu", offload_params="cpu", recompute="full",
                                precision="fsdp-bf16"), "FSDP"),
    "fsdp-zero2-tp": (dict(gpus=16, tp=2, zero=2, precision="fsdp-bf16"), "FSDP"),
    "deepspeed-zero2-offload": (dict(gpus=8, zero=2, offload_optimizer="cpu", engine="deepspeed", grad_accum=4,
                                     precision="bf16-mixed"), "DEEPSPEED"),
    "megatron": (dict(gpus=32, tp=4, pp=2, zero=1, sequence_parallel=True, grad_accum=8, recompute="selective",
                      precision="bf16-mixed"), "MEGATRON_LM"),
    "ddp": (dict(gpus=4, precision="amp-fp16"), "MULTI_GPU"),
    "one": (dict(gpus=1, precision="fp32"), "NO"),
}


@pytest.mark.parametrize("name", list(ACCELERATE))
def test_accelerate_launch_reads_what_memplan_writes(tmp_path, name, monkeypatch):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    layout_dict, kind = ACCELERATE[name]
    layout = EngineLayout.model_validate(layout_dict)
    path = tmp_path / "accelerate.yaml"
    path.write_text(emit_setup(layout, "accelerate").text)
    assert ClusterConfig.from_yaml_file(str(path)).distributed_type.value == kind
    monkeypatch.chdir(tmp_path)
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "x.py"]))
    assert (args.num_processes, args.num_machines) == (layout.gpus, -(-layout.gpus // layout.gpus_per_node))
    mixed = {"amp-bf16": "bf16", "fsdp-bf16": "bf16", "bf16-mixed": "bf16", "amp-fp16": "fp16", "fp32": "no"}[layout.precision]
    assert args.mixed_precision == mixed
    if kind == "FSDP":
        assert args.use_fsdp and args.fsdp_version == 2
        assert args.fsdp_reshard_after_forward == (layout.zero == 3)
        assert args.fsdp_offload_params == (layout.offload_params == "cpu")
        assert args.fsdp_activation_checkpointing == (layout.recompute == "full")
        assert args.use_parallelism_config == (layout.tp > 1) and args.parallelism_config_tp_size == layout.tp
    elif kind == "DEEPSPEED":
        assert args.use_deepspeed and args.zero_stage == layout.zero
        assert args.offload_optimizer_device == layout.offload_optimizer
        assert args.gradient_accumulation_steps == layout.grad_accum
    elif kind == "MEGATRON_LM":
        assert args.use_megatron_lm and (args.megatron_lm_tp_degree, args.megatron_lm_pp_degree) == (4, 2)
        assert args.megatron_lm_num_micro_batches == 8 and args.megatron_lm_sequence_parallelism
    else:
        assert args.multi_gpu == (kind == "MULTI_GPU")


@pytest.mark.parametrize("name", list(ACCELERATE))
def test_accelerate_round_trip(tmp_path, name):
    layout_dict, _ = ACCELERATE[name]
    layout = EngineLayout.model_validate(layout_dict)
    _, back = _emit_and_read(tmp_path, layout_dict, "accelerate")
    s = back.setup
    assert (s.gpus, s.zero, s.precision) == (layout.gpus, layout.zero, layout.precision)
    assert (s.tp or 1, s.pp or 1) == (layout.tp, layout.pp)
    assert (s.offload_optimizer or "none", s.offload_params or "none") == (layout.offload_optimizer,
                                                                           layout.offload_params)
    if layout.recompute != "none":
        assert s.recompute == layout.recompute
    if layout.grad_accum > 1:
        assert s.grad_accum == layout.grad_accum


# ---- torchtitan -------------------------------------------------------------------------------------------------
TITAN = {
    "llama3-70b-pp": dict(model="llama-3-70b", gpus=64, tp=4, pp=4, zero=3, micro_batch=1, grad_accum=16,
                          recompute="selective-op", sequence_parallel=True, virtual_stages=2, precision="fsdp-bf16",
                          seq=4096),
    "llama3-8b-zero2-cp": dict(model="llama-3-8b", gpus=16, zero=2, cp=2, micro_batch=2, grad_accum=4,
                               recompute="full", precision="bf16", seq=8192),
    "ddp": dict(gpus=8, zero=0, micro_batch=4, precision="fp32", seq=2048),
    "offload-ep": dict(gpus=8, zero=3, offload_optimizer="cpu", offload_params="cpu", ep=4, precision="fsdp-bf16",
                       seq=2048),
}


@pytest.mark.parametrize("name", list(TITAN))
def test_torchtitan_writes_jobconfig_fields_and_reads_them_back(tmp_path, name):
    from tests.test_setupfile_readers import JOBCONFIG

    layout = EngineLayout.model_validate(TITAN[name])
    emitted, back = _emit_and_read(tmp_path, TITAN[name], "torchtitan")
    for section, values in tomllib.loads(emitted.text).items():
        assert set(values) <= JOBCONFIG[section], (section, set(values) - JOBCONFIG[section])
    s = back.setup
    assert (s.gpus, s.tp, s.pp, s.cp, s.ep, s.zero) == (layout.gpus, layout.tp, layout.pp, layout.cp, layout.ep,
                                                        layout.zero)
    assert (s.micro_batch, s.grad_accum, s.seq, s.recompute, s.precision) == (
        layout.micro_batch, layout.grad_accum, layout.seq, layout.recompute, layout.precision)
    assert (s.virtual_stages or 1) == layout.virtual_stages and s.model == layout.model
    assert (s.offload_params or "none") == layout.offload_params


# ---- Megatron-LM ------------------------------------------------------------------------------------------------
# Megatron-LM@d98e8a64ddf34856e74b24714e3bedb2f5a39553: the options memplan writes, as its parser defines them
# (megatron/training/arguments.py; the parallel sizes and recompute settings come from ModelParallelConfig and
# TransformerConfig through ArgumentGroupFactory).  The same emitted argument lists were also run through that
# commit's parse_args + validate_args once (with a GPT model's shape flags added): all accepted.
MEGATRON_OPTIONS = {
    "--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--num-virtual-stages-per-pipeline-rank",
    "--context-parallel-size", "--expert-model-parallel-size", "--sequence-parallel", "--recompute-granularity",
    "--recompute-method", "--recompute-num-layers", "--micro-batch-size", "--global-batch-size", "--seq-length",
    "--use-distributed-optimizer", "--use-megatron-fsdp", "--data-parallel-sharding-strategy", "--ckpt-format",
    "--bf16", "--fp16", "--fp8-format", "--optimizer", "--sgd-momentum", "--optimizer-cpu-offload",
    "--use-precision-aware-optimizer", "--decoder-first-pipeline-num-layers", "--decoder-last-pipeline-num-layers",
}
TORCHRUN_OPTIONS = {"--nproc-per-node", "--nnodes"}  # torch/distributed/run.py
MEGATRON = {
    "interleaved": dict(model="llama-3-70b", gpus=64, tp=4, pp=4, zero=1, micro_batch=1, grad_accum=16,
                        recompute="selective", sequence_parallel=True, virtual_stages=2, precision="bf16-mixed",
                        seq=4096),
    "fsdp-cp": dict(gpus=16, tp=2, cp=2, zero=3, micro_batch=2, grad_accum=4, recompute="full",
                    precision="fp16-mixed", optimizer="sgd", seq=2048),
    "ep-offload": dict(gpus=8, pp=2, ep=4, zero=2, grad_accum=8, precision="fp8-mixed", offload_optimizer="cpu",
                       seq=1024),
    "one": dict(gpus=1, precision="fp32", optimizer="sgd-momentum"),
    "uneven": dict(gpus=32, tp=2, pp=4, first_stage_layers=7, last_stage_layers=7, micro_batch=1, grad_accum=32,
                   precision="bf16-mixed"),
}


@pytest.mark.parametrize("name", list(MEGATRON))
def test_megatron_arguments_and_round_trip(tmp_path, name):
    from memplan.setupfiles.megatron import tokens

    layout = EngineLayout.model_validate(MEGATRON[name])
    emitted, back = _emit_and_read(tmp_path, MEGATRON[name], "megatron")
    flags = {t for t in tokens(emitted.text) if t.startswith("--")}
    assert flags - MEGATRON_OPTIONS - TORCHRUN_OPTIONS == set()
    if shutil.which("bash"):
        done = subprocess.run(["bash", "-n", str(tmp_path / emitted.filename)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    s = back.setup
    assert (s.gpus, s.gpus_per_node, s.tp or 1, s.pp or 1, s.cp or 1, s.ep or 1) == (
        layout.gpus, min(layout.gpus, layout.gpus_per_node), layout.tp, layout.pp, layout.cp, layout.ep)
    assert (s.zero, s.micro_batch, s.grad_accum, s.recompute, s.precision, s.optimizer) == (
        layout.zero, layout.micro_batch, layout.grad_accum, layout.recompute, layout.precision, layout.optimizer)
    assert (s.virtual_stages or 1, bool(s.sequence_parallel)) == (layout.virtual_stages, layout.sequence_parallel)
    assert (s.offload_optimizer or "none") == layout.offload_optimizer
    assert (s.first_stage_layers, s.last_stage_layers) == (layout.first_stage_layers, layout.last_stage_layers)


def test_what_a_format_cannot_say_is_a_warning():
    e = emit_setup(dict(gpus=16, pp=2, recompute="full"), "deepspeed")
    assert any("PipelineModule" in w for w in e.warnings) and any("recompute full" in w for w in e.warnings)
    e = emit_setup(dict(gpus=8, zero=3, offload_optimizer="nvme", offload_params="nvme"), "megatron")
    assert any("NVMe" in w for w in e.warnings) and any("parameters" in w for w in e.warnings)


# ---- writing ----------------------------------------------------------------------------------------------------
def test_write_never_overwrites_without_force(tmp_path):
    path = tmp_path / "ds_config.json"
    written, emitted = write_setup_file(path, LAYOUTS["zero1"], "deepspeed")
    assert written == path and path.read_text() == emitted.text
    path.write_text("mine")
    with pytest.raises(MemplanError, match="exists; pass --force"):
        write_setup_file(path, LAYOUTS["zero1"], "deepspeed")
    assert path.read_text() == "mine"
    write_setup_file(path, LAYOUTS["zero1"], "deepspeed", force=True)
    assert json.loads(path.read_text())["zero_optimization"]["stage"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds_config.json"]  # no temporary file left


def test_write_never_replaces_what_is_not_a_regular_file(tmp_path):
    """memplan.report.files' policy: a folder or a FIFO is refused even with force; a symlink is refused without
    force, and with force the file it points to is written (the link stays)."""
    target = tmp_path / "real.json"
    target.write_text("keep")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    (tmp_path / "folder.json").mkdir()
    os.mkfifo(tmp_path / "fifo.json")
    for name in ("folder.json", "fifo.json"):
        with pytest.raises(MemplanError, match="folder|FIFO"):
            write_setup_file(tmp_path / name, LAYOUTS["zero1"], "deepspeed", force=True)
    with pytest.raises(MemplanError):
        write_setup_file(link, LAYOUTS["zero1"], "deepspeed")
    assert target.read_text() == "keep"
    write_setup_file(link, LAYOUTS["zero1"], "deepspeed", force=True)
    assert link.is_symlink() and json.loads(target.read_text())["zero_optimization"]["stage"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo.json", "folder.json", "link.json", "real.json"]
