"""One traced training step of a probe config under FakeTensorMode: forward with the runner's loss, backward, no
optimizer (its transients are the estimate's optimizer model, not the model code's), in one precision mode and
with CPU kernels or the CUDA kernels emulated (memplan/measure/trace/emulate.py)."""
from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch

from memplan.measure.trace.probe import Probe
from memplan.measure.trace.record import Recorder, Recording

MODES = ("fp32", "half", "autocast")
DROPOUT_KEYS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                "hidden_dropout_prob", "attention_probs_dropout_prob", "summary_first_dropout", "embedding_dropout",
                "classifier_dropout", "dropout", "mlp_dropout", "ffn_dropout", "activation_dropout")


@dataclass(frozen=True)
class Variant:
    mode: str  # fp32 | half | autocast
    kernels: str  # cuda (emulated) | cpu
    attention: str  # eager | sdpa
    recompute: str  # none | full
    long_windows: bool | None  # None: no windowed layer; True: windows no shorter than the sequence
    dropout: bool  # the config's dropout (True) or all dropout set to 0 (False)
    # every parameter frozen (LoRA's base): no weight gradients, and only what the activations' gradients need is
    # saved; the embedding output requires grad so that backward runs through every layer as it does from the
    # first adapter on (memory/lora.py adds back what the adapters save and what comes before the first one)
    frozen: bool = False

# frozen variants are traced in this precision mode only (LoRA's base is 16-bit: bf16, or QLoRA's 4-bit weights
# computed in bf16); a LoRA estimate in another mode uses the hand-written rows (memory/activations.py)
FROZEN_MODES = ("half",)


def without_dropout(config: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(config)
    for key in DROPOUT_KEYS:
        if isinstance(out.get(key), (int, float)) and not isinstance(out.get(key), bool) and out[key]:
            out[key] = 0.0
    return out


def has_dropout(config: dict[str, Any], model) -> bool:
    return any((g.layer.attn is not None and g.layer.attn.dropout) or g.layer.dropout for g in model.groups) or model.embeddings.dropout > 0


@contextlib.contextmanager
def _quiet_transformers():
    logger = logging.getLogger("transformers")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def run(probe: Probe, v: Variant) -> Recording:
    """One traced step of `probe` in variant `v`."""
    from memplan.measure.models import build_hf_config, default_dtype
    from memplan.measure.runner import fake_mode, training_loss
    from memplan.measure.trace import emulate

    config = probe.config if v.dropout else without_dropout(probe.config)
    weights = torch.bfloat16 if v.mode == "half" else torch.float32
    with fake_mode(), _quiet_transformers():
        with default_dtype(weights):
            built = build_hf_config(config, v.attention)
        m = built.module
        m.train()
        cuda = v.kernels == "cuda"
        kernels = emulate.CudaKernels(rec=None, autocast=v.mode == "autocast") if cuda else None
        if v.recompute == "full":
            kw: dict[str, Any] = {"use_reentrant": False}
            if kernels is not None:
                # the autograd engine runs backward without torch-function modes: the recomputed forward
                # re-enters the emulation explicitly (torch.utils.checkpoint context_fn)
                kw["context_fn"] = lambda: (contextlib.nullcontext(), kernels.recompute())
            if hasattr(m, "activation_checkpointing_enable"):
                m.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
            else:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
        ids = torch.randint(0, built.vocab_size, (probe.batch, probe.seq))
        targets = torch.randint(0, built.vocab_size, (probe.batch, probe.seq))
        anchor = []
        if v.frozen:
            for param in m.parameters():
                param.requires_grad_(False)
            # the embedding output made to require grad as the output of an add (which saves nothing), not as a
            # leaf: autograd's AccumulateGrad would hold a leaf alive to the end of backward, which a PEFT step's
            # embedding output is not (transformers' enable_input_require_grads makes that leaf).  Inside the
            # module's forward, not a forward hook: under checkpointing the hooked call kept the raw output alive
            # to the end of the step beside the sum (traced: one b*s*h tensor too many)
            anchor.append(torch.zeros((), requires_grad=True))
            emb = m.get_input_embeddings()
            plain = emb.forward
            emb.forward = lambda *a, **k: (lambda out: out + anchor[0].to(out.dtype))(plain(*a, **k))
        rec = Recorder(m, probe.model.n_layers, built.lm_head)
        rec.register_persistent([*m.parameters(), *m.buffers(), ids, targets, *anchor])
        rec.attach()
        if kernels is not None:
            kernels.rec = rec
        dispatch = emulate.CudaDispatch() if cuda else contextlib.nullcontext()
        if v.mode == "autocast":
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        else:
            autocast = contextlib.nullcontext()
        with torch.autograd.graph.saved_tensors_hooks(rec.pack, rec.unpack), dispatch, rec, \
                (kernels if kernels is not None else contextlib.nullcontext()):
            with autocast:
                loss = training_loss(built, m, ids, lambda: targets)
            if cuda:
                kernels.end_autocast()
            if "forward_end" not in rec.marks:
                rec.marks["forward_end"] = rec.clock
                rec.phase = "loss"
            rec.start_backward()
            loss.backward()
            del loss
        return rec.finish()
