"""One steady-state training step, measured: warm-up steps, then forward, loss, backward, optimizer step,
zero_grad(set_to_none=True), with every tensor storage counted by category (measure/tracker.py).

Devices: "cpu" (real tensors), "fake" (the same step under FakeTensorMode on the cpu device: the model is
*built* fake, so a 70B step costs seconds and almost no memory; bytes are exact tensor bytes), "cuda" (real, plus
allocator/NVML/timing in measure/cuda.py).  cpu and fake agree to the byte (tests/test_measure_runner.py).

Recipes (memplan/spec/training.py RECIPES):
- fp32: fp32 weights, grads, optimizer states;
- amp-bf16 / amp-fp16: torch.autocast(compute dtype) over fp32 weights; fp16 adds loss scaling;
- bf16-mixed / fp16-mixed: half-precision model + fp32 master copy (MasterWeightsOptimizer, below);
- bf16: pure bf16 (the optimizer updates the bf16 weights; torch keeps its states in the parameter's dtype).
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from memplan.errors import MemplanError
from memplan.measure.models import BuiltModel, build_model
from memplan.measure.oom import first_line, is_out_of_memory
from memplan.measure.optimizers import OPTIMIZER_IMPLS, default_optimizer_impl, make_optimizer
from memplan.measure.phases import _Phases  # where the step is (also imported from here by tests)
from memplan.measure.precision import LossScaler, MasterWeightsOptimizer, ScaledOptimizer
from memplan.measure.tracker import StorageTracker, downsample_max
from memplan.results.profile import CATEGORIES, MeasuredStep
from memplan.spec.setup import TrainingSetup
from memplan.spec.training import DType

TORCH_DTYPES = {DType.fp32: torch.float32, DType.tf32: torch.float32, DType.bf16: torch.bfloat16,
                DType.fp16: torch.float16}
Progress = Callable[[str], None]
# re-exported: measure/distributed.py builds its ranks from the same pieces
__all__ = ["measure_training_step", "find_max_micro_batch", "TORCH_DTYPES", "OPTIMIZER_IMPLS", "LossScaler",
           "MasterWeightsOptimizer", "ScaledOptimizer", "default_optimizer_impl", "make_optimizer"]


# ---------------------------------------------------------------------------------------------------------
# the step
# ---------------------------------------------------------------------------------------------------------
def training_loss(built: BuiltModel, module: nn.Module, input_ids: torch.Tensor,
                  targets: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The loss of a measured step (also the multi-rank runner's): HF's own causal-LM loss, or cross-entropy
    on fp32 logits; `targets` is called only on that last path, where it is needed."""
    if built.kind == "encoder":  # BertModel has no LM loss: a synthetic scalar over what it returns
        out = module(input_ids=input_ids)
        loss = out.last_hidden_state.float().pow(2).mean()
        pooled = getattr(out, "pooler_output", None)
        # the pooler too, so that every parameter gets a gradient (and optimizer states), as the estimate assumes
        return loss + pooled.float().pow(2).mean() if pooled is not None else loss
    if built.kind == "pretraining":  # BertForPreTraining: masked-LM loss + next-sentence loss
        nsp = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        return module(input_ids=input_ids, labels=input_ids, next_sentence_label=nsp).loss
    if built.kind == "sequence-classification":
        # a score head (GenericForSequenceClassification): one label per sequence, scored at its last token; the
        # model's own loss (loss_utils.py ForSequenceClassificationLoss: MSE for one label -- a reward model's
        # regression -- else cross-entropy on the pooled logits)
        b = input_ids.shape[0]
        n = int(getattr(module.config, "num_labels", 1) or 1)
        labels = torch.zeros(b, device=input_ids.device) if n == 1 else \
            torch.zeros(b, dtype=torch.long, device=input_ids.device)
        return module(input_ids=input_ids, labels=labels).loss
    if built.source == "hf":  # HF's own loss path (ForCausalLMLoss / ForMaskedLMLoss: logits.float(), cross_entropy)
        return module(input_ids=input_ids, labels=input_ids).loss
    out = module(input_ids)
    if getattr(out, "loss", None) is not None:
        return out.loss
    logits = getattr(out, "logits", out)
    # same as HF: upcast logits to fp32 for the loss
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets().view(-1))


def run_training_step(phases: "_Phases", loss_fn: Callable[[], torch.Tensor], autocast, scaler, optimizer,
                      after_backward: Callable[[], None] | None = None, keep_loss: bool = False):
    """One step in the phases every measurement names: forward (+ loss), backward, optimizer step, zero_grad.
    Returns the detached loss when `keep_loss` (its storage then lives through the step), else None."""
    phases("forward")
    with autocast:
        loss = loss_fn()
    phases("backward")
    (scaler.scale_loss(loss) if scaler else loss).backward()
    if after_backward is not None:
        after_backward()
    value = loss.detach() if keep_loss else None
    del loss
    phases("optimizer_step")
    optimizer.step()
    phases("zero_grad")
    optimizer.zero_grad(set_to_none=True)
    phases("done")
    return value


class _Step:
    """Everything one training step needs; `run(phases)` does one step."""

    def __init__(self, setup: TrainingSetup, device: str, model_source: str, optimizer_impl: str | None,
                 seed: int) -> None:
        r, w = setup.recipe, setup.workload
        if r.compute == DType.fp8 or r.weights not in TORCH_DTYPES:
            raise MemplanError(f"recipe {r.name} cannot be measured here (fp8/quantized weights need Transformer "
                               "Engine or bitsandbytes); measure bf16-mixed instead")
        fp32_main_grads = r.gradients == DType.fp32 and r.weights != DType.fp32 and r.master_weights == DType.fp32
        if r.gradients != r.weights and not fp32_main_grads:
            raise MemplanError(f"recipe {r.name}: gradients in {r.gradients.value} with weights in {r.weights.value} "
                               "is measured only with fp32 master weights (Megatron's fp32 main_grad)")
        if r.master_weights not in (None, DType.fp32):
            raise MemplanError(f"recipe {r.name}: master weights must be fp32 or none to be measured")
        if setup.layout.gpus > 1:
            raise MemplanError("profile measures one device; use --gpus 1 (multi-GPU runs: measure/distributed.py)")
        if setup.lora is not None:
            raise MemplanError("profile does not measure LoRA yet; drop --lora")
        self.setup, self.device = setup, device
        self.torch_device = torch.device("cuda" if device == "cuda" else "cpu")
        weight_dtype = TORCH_DTYPES[r.weights]
        self.compute_dtype = TORCH_DTYPES[r.compute]
        self.autocast = r.autocast
        torch.manual_seed(seed)
        with torch.device(self.torch_device):
            self.built: BuiltModel = build_model(setup.model, model_source, w.attention, setup.layout.recompute,
                                                 dtype=weight_dtype)
        m = self.built.module
        m.train()
        if setup.layout.recompute == "full" and self.built.source == "hf":
            # every layer, non-reentrant torch.utils.checkpoint (transformers 5 renamed the method)
            if hasattr(m, "activation_checkpointing_enable"):
                m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif setup.layout.recompute == "selective" and self.built.source != "reference":
            raise MemplanError("--recompute selective is measured with --model-source reference only "
                               "(it checkpoints the attention core); use full, or the reference model")
        elif setup.layout.recompute == "full" and self.built.source.startswith("factory"):
            raise MemplanError("--recompute full with --factory: enable checkpointing inside your factory and "
                               "pass --recompute none")
        params = [p for p in m.parameters() if p.requires_grad]
        self.opt_params = params
        self.scaler = LossScaler() if r.compute == DType.fp16 else None
        master = r.master_weights is not None
        self.optimizer_impl = optimizer_impl or default_optimizer_impl(params)
        name = setup.optimizer.name
        if master:
            self.optimizer = MasterWeightsOptimizer(params, lambda ps: make_optimizer(name, ps, self.optimizer_impl),
                                                    self.scaler, fp32_grads=fp32_main_grads)
        else:
            inner = make_optimizer(name, params, self.optimizer_impl)
            self.optimizer = ScaledOptimizer(inner, self.scaler) if self.scaler else inner
        self.batch, self.seq = setup.layout.micro_batch, setup.seq
        vocab = self.built.vocab_size
        with torch.device(self.torch_device):
            self.input_ids = torch.randint(0, vocab, (self.batch, self.seq))
            # next-token targets drawn directly (the HF path shifts labels itself)
            self.targets = torch.randint(0, vocab, (self.batch, self.seq))
        self._phases: _Phases | None = None
        if self.built.lm_head is not None:
            self.built.lm_head.register_forward_hook(self._after_head)

    def _after_head(self, module, args, output) -> None:
        if self._phases is not None:
            self._phases("loss")

    def _autocast(self):
        if not self.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.torch_device.type, dtype=self.compute_dtype)

    def run(self, phases: _Phases) -> None:
        self._phases = phases
        try:
            run_training_step(phases, lambda: training_loss(self.built, self.built.module, self.input_ids,
                                                            lambda: self.targets),
                              self._autocast(), self.scaler, self.optimizer)
        finally:
            self._phases = None

    def master_tensors(self) -> list[torch.Tensor]:
        return self.optimizer.master if isinstance(self.optimizer, MasterWeightsOptimizer) else []

    def main_grads(self) -> list[torch.Tensor]:
        return self.optimizer.main_grads if isinstance(self.optimizer, MasterWeightsOptimizer) else []


class _FakeGroupedMM(torch.autograd.Function):
    """torch's grouped matmul as autograd keeps it (derivatives.yaml _grouped_mm: one formula per operand, so each
    operand is saved only for the other's gradient: a frozen weight's grouped matmul does not keep its input, as
    the CPU kernel's step measures; backward makes one gradient per operand, laid out like it), for fake tensors:
    the meta kernel (_meta_registrations.py meta_grouped_mm) checks CUDA's constraints (bf16 only, 16-byte aligned
    rows), which the CPU kernel does not have, so an fp32 MoE step (fp32 weights, autocast) could not be traced
    otherwise."""

    @staticmethod
    def forward(ctx, a, b, offs):
        need_a, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        ctx.save_for_backward(a if need_b else None, b if need_a else None, offs)
        ctx.layouts = ((a.shape, a.stride(), a.dtype, a.device), (b.shape, b.stride(), b.dtype, b.device))
        return a.new_empty((a.shape[0], b.shape[-1]))

    @staticmethod
    def backward(ctx, grad):
        (sa, ta, da, va), (sb, tb, db, vb) = ctx.layouts
        return (torch.empty_strided(sa, ta, dtype=da, device=va) if ctx.needs_input_grad[0] else None,
                torch.empty_strided(sb, tb, dtype=db, device=vb) if ctx.needs_input_grad[1] else None, None)


def _grouped_mm_for(real):
    def grouped_mm(mat_a, mat_b, *args, offs=None, bias=None, out_dtype=None, **kwargs):
        from torch._subclasses.fake_tensor import FakeTensor

        if isinstance(mat_a, FakeTensor) and bias is None and out_dtype is None and not args and not kwargs \
                and mat_a.dim() == 2 and mat_b.dim() == 3:
            return _FakeGroupedMM.apply(mat_a, mat_b, offs)
        return real(mat_a, mat_b, *args, offs=offs, bias=bias, out_dtype=out_dtype, **kwargs)
    return grouped_mm


@contextlib.contextmanager
def fake_mode():
    """FakeTensorMode, with transformers' value-dependent branches taken as a real batch takes them and torch's
    grouped matmul without the CUDA-only checks of its meta kernel (_FakeGroupedMM).

    transformers reads a few tensor values to choose a code path and, when it cannot (a fake tensor), takes the
    general one: masking_utils.find_packed_sequence_indices treats position ids it cannot read as a packed batch
    and builds a (b, 1, s, s) mask that a real, unpacked batch (position ids 0..s-1) never gets (it matters without
    a KV cache, i.e. under gradient checkpointing).  The runner's position ids are 0..s-1: the answer is None."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    patched = []
    try:
        import transformers.masking_utils as mu

        if hasattr(mu, "find_packed_sequence_indices"):
            patched.append((mu, "find_packed_sequence_indices", mu.find_packed_sequence_indices))
            mu.find_packed_sequence_indices = lambda position_ids: None
    except ImportError:
        pass
    for holder, name in ((F, "grouped_mm"), (torch, "_grouped_mm")):
        if hasattr(holder, name):
            patched.append((holder, name, getattr(holder, name)))
            setattr(holder, name, _grouped_mm_for(getattr(holder, name)))
    try:
        with FakeTensorMode():
            yield
    finally:
        for mod, name, fn in reversed(patched):
            setattr(mod, name, fn)


def measure_training_step(setup: TrainingSetup, device: str = "cpu", model_source: str = "hf",
                          warmup_steps: int = 1, optimizer_impl: str | None = None, seed: int = 0,
                          progress: Progress | None = None, cuda_options: dict | None = None) -> MeasuredStep:
    """Warm-up steps, then one measured steady-state step; bytes by category at the peak of each phase.

    `model_source`: "hf", "reference", or "module:function" (a factory). `optimizer_impl`: "for-loop",
    "foreach", "fused", or None for torch's default on the device (recorded in the result).
    `cuda_options` (device "cuda" only): see memplan.measure.cuda.CudaSession (timed_steps, snapshot, ...).
    An out-of-memory error is a result: `oom=True`, `oom_phase`, and what was measured up to then.
    """
    if device not in ("cpu", "fake", "cuda"):
        raise MemplanError(f"--device {device!r}: use cuda, cpu or fake")
    if device == "cuda" and not torch.cuda.is_available():
        raise MemplanError("--device cuda: torch sees no CUDA device here; use --device fake or cpu")
    if warmup_steps < 1:
        raise MemplanError("warm-up steps must be >= 1: the measured step must find the optimizer state allocated")
    say = progress or (lambda _msg: None)
    mode = fake_mode() if device == "fake" else contextlib.nullcontext()
    with mode:
        return _measure(setup, device, model_source, warmup_steps, optimizer_impl, seed, say, cuda_options or {})


def _step_failure(exc: BaseException, step, phase: str) -> MemplanError:
    """A first step that raised something other than an out-of-memory: one line naming the model class, the phase
    and the library whose code raised it (e.g. transformers' Llama4ForConditionalGeneration forward without a
    vision_config reads an attribute its text-only output lacks)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = next((lib for f in reversed(frames) for lib in ("transformers", "peft", "torch")
                  if f"/{lib}/" in f.filename.replace("\\", "/")), None)
    name = type(step.built.module).__name__
    inside = f" inside {where}" if where else ""
    return MemplanError(f"the {phase} of {name} failed{inside} ({_library_words(first_line(exc))}); this "
                        "config may not run in the installed library as given: check its fields, or try "
                        "--model-source reference")


def _library_words(text: str) -> str:
    """A library's failure in words a user reads, without Python's internals: no exception class names, and
    "'X' object has no attribute 'y'" as "X has no y"."""
    import re

    text = re.sub(r"'(\w+)' object has no attribute '(\w+)'", r"\1 has no \2", text)
    text = re.sub(r"\b[A-Z]\w*(?:Error|Exception)\b:?\s*", "", text)
    return text.strip() or "an internal failure"


def _measure(setup, device, model_source, warmup_steps, optimizer_impl, seed, say, cuda_options) -> MeasuredStep:
    say(f"building {setup.model.name} ({model_source}) on {device}")
    try:
        step = _Step(setup, device, model_source, optimizer_impl, seed)
    except Exception as exc:  # noqa: BLE001 - only an out-of-memory is a result; anything else propagates
        if not is_out_of_memory(exc):
            raise
        say(f"out of memory while building the model: {first_line(exc)}")
        return _build_oom_result(setup, device, model_source, optimizer_impl, first_line(exc))
    tracker = StorageTracker("cuda" if device == "cuda" else "cpu")
    cuda = None
    if device == "cuda":
        from memplan.measure.cuda import CudaSession

        cuda = CudaSession(step, **cuda_options)
    observers: list = [tracker] + ([cuda] if cuda else [])
    phases = _Phases([])
    notes: list[str] = []
    oom: tuple[str, str] | None = None
    try:
        for i in range(warmup_steps):
            say(f"warm-up step {i + 1}/{warmup_steps}")
            step.run(phases)
    except MemplanError:
        raise
    except Exception as exc:  # noqa: BLE001
        if not is_out_of_memory(exc):
            raise _step_failure(exc, step, phases.current or "forward") from None
        oom = (phases.current or "forward", first_line(exc))
        notes.append("out of memory during warm-up (the first step also allocates the optimizer states); the "
                     "bytes shown are what was still alive after the error (a lower bound of the peak)")
    if oom is not None:  # outside the except clause: its traceback no longer holds the step's tensors
        gc.collect()
        _register(tracker, step)
        tracker.remove_hooks()
        tracker.alive_as_peak(oom[0])
    else:
        gc.collect()
        _register(tracker, step)
        if cuda is not None:
            cuda.before_measured_step()
        phases = _Phases(observers)
        say("measured step")
        try:
            with tracker:
                step.run(phases)
        except Exception as exc:  # noqa: BLE001
            if not is_out_of_memory(exc):
                raise
            oom = (phases.current or "forward", first_line(exc))
        finally:
            tracker.remove_hooks()
    if cuda is not None:
        if oom is None:
            cuda.after_measured_step(phases, tracked_bytes=tracker.total)
        else:
            cuda.after_oom()
    arch = setup.model.architecture
    dropout = max((g.layer.attn.dropout for g in arch.groups if g.layer.attn is not None), default=0.0) if arch is not None else 0.0
    if device != "cuda" and setup.workload.attention != "eager" and dropout:
        # torch's CPU sdpa kernel has no dropout: with dropout_p > 0 it falls back to the math path, which keeps
        # the b x heads x s x s probabilities and dropout mask per layer; CUDA's flash/efficient kernels do not
        notes.append(f"attention dropout {dropout} with sdpa on the CPU: torch runs the math path "
                     "and saves b*heads*s^2 probabilities and masks per layer, which a cuda flash/efficient kernel "
                     "does not; these activations overstate a cuda step's")
    if step.scaler is not None and step.scaler.found_inf:
        notes.append("loss scaling overflowed in the measured step (the update was applied anyway)")
    return _result(setup, device, step, tracker, cuda, oom, notes)


def _build_oom_result(setup: TrainingSetup, device: str, model_source: str, optimizer_impl: str | None,
                      message: str) -> MeasuredStep:
    """Out of memory before the model existed: what is known, and the bytes the allocator saw (cuda)."""
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    peak = 0
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
        torch.cuda.empty_cache()
    w, p = setup.workload, setup.layout
    source = model_source if model_source in ("hf", "reference") or model_source.startswith("factory:") \
        else f"factory:{model_source}"
    return MeasuredStep(
        model=setup.model.name, parameters=setup.model.parameters.total, device=device, model_source=source,
        recipe=setup.recipe.name, optimizer=setup.optimizer.name,
        optimizer_impl=optimizer_impl or ("foreach" if device == "cuda" else "for-loop"), micro_batch=p.micro_batch,
        seq=setup.seq, recompute=p.recompute, attention=w.attention, torch_version=torch.__version__,
        transformers_version=tf_version, peak_allocated=peak, weights=0, gradients=0, optimizer_states=0,
        activations=0, temporaries=0, tracked_peak=0, peak_phase="build", phases=[],
        activations_at_backward_start=0, oom=True, oom_phase="build", oom_message=message,
        notes=["out of memory while building the model (weights, optimizer, inputs): nothing else was measured; "
               "parameters is memplan's count, not the built module's"
               + ("; peak_allocated is the CUDA allocator's peak up to the error" if device == "cuda" else "")],
        setup=setup)


def _register(tracker: StorageTracker, step: _Step) -> None:
    """Everything alive before the measured step, by category; a parameter's .grad is `gradients` once accumulated."""
    m = step.built.module
    tracker.track(list(m.parameters()), "weights")
    tracker.track(list(m.buffers()), "other")
    tracker.track(step.master_tensors(), "master_weights")
    tracker.track(step.main_grads(), "gradients")  # Megatron-style persistent fp32 grads (recipe gradients=fp32)
    inner = getattr(step.optimizer, "inner", step.optimizer)
    tracker.track_optimizer(inner)
    tracker.track([step.input_ids, step.targets], "other")
    for p in m.parameters():  # zero_grad(set_to_none) ran at the end of warm-up; anything left is a gradient
        tracker.track(p.grad, "gradients")
    tracker.watch_gradients(m.parameters())


def _result(setup, device, step: _Step, tracker: StorageTracker, cuda, oom, notes) -> MeasuredStep:
    phases = [p for p in tracker.phase_results() if p.name != "done"]
    if cuda is not None:
        cuda.annotate_phases(phases)
    cats = {c: tracker.peak_bytes.get(c, 0) for c in CATEGORIES}
    try:
        import transformers

        tf_version = transformers.__version__
    except ImportError:
        tf_version = None
    from memplan.measure.models import module_parameters

    w = setup.workload
    if "optimizer_impl" in type(w).model_fields:  # record the implementation that actually ran
        setup = setup.model_copy(update={"workload": w.model_copy(update={"optimizer_impl": step.optimizer_impl})})
    timeline, stride = downsample_max(tracker.timeline)
    starts = {k: int(v / stride) for k, v in tracker.phase_starts.items() if k != "done"}
    peak = tracker.peak
    peak_phase = tracker.peak_phase
    cuda_info = cuda.info() if cuda is not None else None
    if cuda is not None:
        notes = notes + cuda.notes
    if cuda is not None and cuda.allocated_peak is not None:
        # the peak's bytes and its phase from the same source (the allocator's per-phase peaks); the tracker's
        # phase is said beside it when it differs (the allocator adds workspaces and rounding no tracker sees)
        peak = cuda.allocated_peak
        if cuda.peak_phase is not None:
            if tracker.peak_phase and cuda.peak_phase != tracker.peak_phase:
                notes = notes + [f"the allocator peaks in {cuda.peak_phase}, the tensors alone in "
                                 f"{tracker.peak_phase} (tracked_peak)"]
            peak_phase = cuda.peak_phase
    return MeasuredStep(
        model=setup.model.name, parameters=module_parameters(step.built.module), device=device,
        model_source=step.built.source, recipe=setup.recipe.name, optimizer=setup.optimizer.name,
        optimizer_impl=step.optimizer_impl, micro_batch=setup.layout.micro_batch, seq=step.seq, recompute=setup.layout.recompute,
        attention=w.attention, torch_version=torch.__version__, transformers_version=tf_version,
        peak_allocated=peak, tracked_peak=tracker.peak, peak_phase=peak_phase or (oom[0] if oom else "forward"),
        phases=phases, activations_at_backward_start=tracker.activations_at_backward_start,
        timeline_bytes=timeline, timeline_phase_starts=starts, cuda=cuda_info, oom=oom is not None, oom_phase=oom[0] if oom else None, oom_message=oom[1] if oom else None,
        notes=notes, setup=setup, **cats)


def find_max_micro_batch(setup: TrainingSetup, device: str = "cuda", model_source: str = "hf",
                         capacity_bytes: int | None = None, limit: int = 4096, progress: Progress | None = None,
                         **kwargs) -> tuple[int, list[MeasuredStep]]:
    """The largest micro-batch whose step runs: doubling until the first failure, then bisection.

    On cuda a failure is an out-of-memory error; on cpu/fake it is a tracked peak above `capacity_bytes`
    (e.g. the GPU profile's memory minus its context), which must then be given.
    Returns (largest that runs, 0 if even 1 fails; every measurement made, in order).
    """
    if device != "cuda" and capacity_bytes is None:
        raise MemplanError("--find-max-batch on cpu/fake needs a capacity: pass --gpu NAME")
    say = progress or (lambda _msg: None)
    tried: list[MeasuredStep] = []

    def fits(batch: int) -> bool:
        s = setup.model_copy(update={"layout": setup.layout.model_copy(update={"micro_batch": batch})})
        say(f"micro-batch {batch}")
        r = measure_training_step(s, device=device, model_source=model_source, progress=None, **kwargs)
        tried.append(r)
        if device == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
        return not r.oom and (capacity_bytes is None or r.peak_allocated <= capacity_bytes)

    from memplan.memory.search import largest_fitting

    return largest_fitting(fits, limit), tried
