"""`trace_profile(config)`: a Hugging Face config -> an implementation profile (the data format of
profiles/implementations/hf.json) traced from the family's own modeling code.

The variants traced: every precision mode (fp32; half = 16-bit weights; autocast = fp32 weights under bf16
autocast), CPU kernels and the CUDA kernels emulated (emulate.py), eager and sdpa attention, no recompute and full
recompute (transformers' gradient checkpointing), windows longer and shorter than the sequence (only if the model
has windowed layers), the config's dropout and none (only if it has dropout).  Each variant runs two probes (the
first three) of one layer period under FakeTensorMode; analyze.py turns each into items and merge.py the items of
all into rows.
"""
from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from memplan.errors import MemplanError
from memplan.measure.trace import analyze, merge, probe as probe_mod, step
from memplan.measure.trace.shapes import PREFER as PREFER_MODEL, ShapeError, base_tables

Progress = Callable[[str], None]
GRID_BATCH = (1, 8)
GRID_SEQ = (512, 4096, 32768)


def _sizes(layer, m, b: int, s: int) -> dict[str, int]:
    from memplan.memory.activations import layer_sizes
    from memplan.memory.implementations import ImplementationProfile

    dummy = ImplementationProfile(name="trace", description="", layer=[], checkpoint=[], embedding=[], head=[])
    return {**layer_sizes(layer, m, b, s, m.n_layers, dummy), "P": m.max_positions}


def _kinds(m) -> list:
    return [spec for spec, _ in m.kinds()]


def _attention_names(m) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Module paths (inside a layer) of the attention blocks and of their output projections."""
    blocks, outs = set(), set()
    for spec in _kinds(m):
        for lin in m.linears(spec):
            if lin.role in ("q", "qkv", "q_a", "kv_a", "k", "v"):
                blocks.add(lin.name.rsplit(".", 1)[0])
            if lin.role == "o":
                outs.add(lin.name)
    return tuple(sorted(blocks)), tuple(sorted(outs))


def kind_features(m) -> list[dict]:
    """Per layer kind: the layer features (activation-rows.md) whose value tells it from the other kinds."""
    from memplan.memory.activations import layer_features
    from memplan.memory.implementations import ImplementationProfile
    from memplan.spec.model import ModelSpec
    from memplan.spec.setup import TrainingSetup

    kinds = _kinds(m)
    if len(kinds) == 1:
        return [{}]
    dummy = ImplementationProfile(name="trace", description="", layer=[], checkpoint=[], embedding=[], head=[])
    setup = TrainingSetup(model=ModelSpec(name="trace", architecture=m))
    skip = {"mode", "kernels", "attention", "recompute", "window_mask", "sdpa_math"}
    feats = [layer_features(k, m, setup, "fp32", "cuda", dummy) for k in kinds]
    keys = [key for key in feats[0] if key not in skip and len({repr(f[key]) for f in feats}) > 1]
    out = [{key: f[key] for key in keys} for f in feats]
    if len({repr(o) for o in out}) < len(out):
        raise MemplanError("two layer kinds of this model have the same layer features; the traced rows could not "
                           "tell them apart")
    return out


class Tracer:
    def __init__(self, config: dict[str, Any], progress: Progress | None = None, keyed: bool = False) -> None:
        self.say = progress or (lambda _msg: None)
        self.keyed = keyed
        self.config = config
        self.text = probe_mod.with_class_defaults(probe_mod.text_config(config))
        self.period = probe_mod.one_period(self.text)
        self.real = probe_mod.read_model(self.period, "config")
        self.kinds = _kinds(self.real)
        self.kind_of_layer = [self.kinds.index(spec) for spec in self.real.layers()]
        self.kind_when = kind_features(self.real)
        self.notes: list[str] = []

    # ---- the variant grid -------------------------------------------------------------------------------
    def dims(self) -> dict[str, list]:
        windows = [True, False] if probe_mod.has_windows(self.real) else [None]
        dropout = [True, False] if step.has_dropout(self.period, self.real) else [True]
        return {"attention": ["eager", "sdpa"], "recompute": ["none", "full"], "window": windows,
                "dropout": dropout}

    def variants(self, dims: dict[str, list]) -> list[step.Variant]:
        out = []
        for att, rec, win, drop in itertools.product(dims["attention"], dims["recompute"], dims["window"],
                                                     dims["dropout"]):
            for kernels in ("cuda", "cpu"):
                for mode in step.MODES:
                    out.append(step.Variant(mode, kernels, att, rec, win, drop))
                for mode in step.FROZEN_MODES:
                    out.append(step.Variant(mode, kernels, att, rec, win, drop, frozen=True))
        return out

    def grid(self, probe: probe_mod.Probe) -> list:
        out = []
        for m in (self.real, probe.model):
            kinds = _kinds(m)
            for b in GRID_BATCH:
                for s in GRID_SEQ:
                    tables = [_sizes(k, m, b, s) for k in kinds]
                    out.append((tables, tables[0]))
        return out

    # ---- one variant --------------------------------------------------------------------------------------
    def items(self, v: step.Variant, count: int, learned: dict | None = None) -> tuple[list, dict]:
        """Items of variant `v` from `count` probes (one: read with `learned`), and what its shapes taught."""
        probes = probe_mod.probes(self.period, bool(v.long_windows), count)
        recs = [step.run(p, v) for p in probes]
        analyze.check_aligned(recs)
        tables = [base_tables([_sizes(_kinds(p.model)[k], p.model, p.batch, p.seq) for p in probes])
                  for k in range(len(self.kinds))]
        blocks, outs = _attention_names(self.real)
        shapes = analyze.Shapes(recs, tables, tables[0], blocks, outs, learned)
        builder = analyze.Builder(recs, shapes, self.kind_of_layer, self.grid(probes[0]))
        kept = builder.kept("layer" if v.recompute == "none" else "checkpoint")
        trans = builder.transients()
        return kept + trans + self._inputs(recs, shapes), shapes.learned_dims()

    def _inputs(self, recs, shapes: analyze.Shapes) -> list[analyze.Item]:
        """The batch (input ids and targets, as the runner makes them) and the module buffers."""
        from fractions import Fraction

        from memplan.measure.trace.shapes import canonical_poly, elements

        out = [analyze.Item(region="inputs", kind=None, moment="", name="input ids and targets",
                            poly={("b", "s"): Fraction(2)}, itemsize=8, integer=True)]
        for i, (name, shape, dtype) in enumerate(recs[0].buffers):
            shapes_all = [r.buffers[i][1] for r in recs]
            try:
                poly = canonical_poly(elements([shapes._dim(None, tuple(s[j] for s in shapes_all), PREFER_MODEL)
                                                for j in range(len(shape))]))
            except ShapeError:  # sized by something no size name is (max positions: BERT's position_ids)
                self.notes.append(f"buffer {name} {tuple(shape)} is sized by no size name: not counted")
                continue
            parts = name.split(".")
            if any(p.isdigit() for p in parts):
                if "0" not in parts:
                    continue  # one layer's buffers, times the layers
                poly = {tuple(sorted(m + ("L",))): c for m, c in poly.items()}
            out.append(analyze.Item(region="inputs", kind=None, moment="", name=f"buffer {name}", poly=poly,
                                    itemsize=analyze.itemsize(dtype), integer=not dtype.is_floating_point))
        return out

    @staticmethod
    def _recompute_adjustment(trans, kept, layer_rows) -> list[analyze.Item]:
        """Under full recompute the timeline adds the whole layer to the forward's transients and the recomputed
        layer's full activations (minus its checkpoint) to its backward: those are taken off the traced
        transients so that the sum is the traced step."""
        import dataclasses

        out = []
        moments = {(it.region, it.kind, it.moment) for it in trans if it.region in ("layer_forward", "layer_backward")}
        for region, kind, moment in sorted(moments, key=str):  # a set: sorted, so that a rerun writes the same file
            k = 0 if kind is None else kind
            for row in layer_rows.get(k, []):
                out.append(dataclasses.replace(row, region=region, kind=kind, moment=moment, sign=-row.sign,
                                               name=f"(counted by the timeline) {row.name}"))
            if region == "layer_backward":
                for row in kept:
                    if row.region == "checkpoint" and row.kind == k:
                        out.append(dataclasses.replace(row, region=region, kind=kind, moment=moment,
                                                       name=f"(checkpoint, counted by the timeline) {row.name}"))
        return out

    # ---- all of it ----------------------------------------------------------------------------------------
    def _describe(self, v: step.Variant) -> str:
        return (f"{v.mode} weights, {v.kernels} kernels, {v.attention} attention, recompute {v.recompute}"
                + ("" if v.long_windows is None else
                   f", windows {'longer' if v.long_windows else 'shorter'} than the sequence")
                + ("" if v.dropout else ", no dropout") + (", frozen weights" if v.frozen else ""))

    def run(self, workers: int | None = None) -> dict[str, Any]:
        dims = self.dims()
        try:
            self._check_sdpa()
        except _NoSdpa as exc:
            dims["attention"] = ["eager"]
            self.notes.append(str(exc))
        variants = self.variants(dims)
        t0 = time.time()
        # the first variant with three probes teaches every dimension; the others run one probe each
        base = variants[0]
        self.say(f"[1/{len(variants)}] {self._describe(base)} (3 probes)")
        try:
            first, learned = self.items(base, 3)
        except ShapeError as exc:
            raise MemplanError(f"trace: {exc}") from None
        results: dict[step.Variant, list[analyze.Item]] = {base: first}
        rest = variants[1:]
        results.update(_run_many(self, rest, learned, workers))
        self.say(f"traced {len(variants)} variants in {time.time() - t0:.1f}s")
        for v in variants:  # full recompute: take off what the timeline adds on its own
            if v.recompute == "full":
                none = step.Variant(v.mode, v.kernels, v.attention, "none", v.long_windows, v.dropout, v.frozen)
                layer_rows: dict[int, list] = {}
                for it in results.get(none, []):
                    if it.region == "layer":
                        layer_rows.setdefault(it.kind, []).append(it)
                trans = [it for it in results[v] if it.region in ("layer_forward", "layer_backward")]
                kept = [it for it in results[v] if it.region == "checkpoint"]
                results[v] = results[v] + self._recompute_adjustment(trans, kept, layer_rows)
        rows = merge.merge(results, self.kind_when, dims)
        return self._profile(rows, dims)

    def _check_sdpa(self) -> None:
        """transformers refuses sdpa for some families (Gemma 2's soft-capping: sdpa_attention.py raises; some
        classes declare no sdpa support): one traced step tells."""
        p = probe_mod.probes(self.period, True, 1)[0]
        try:
            step.run(p, step.Variant("fp32", "cpu", "sdpa", "none", True, True))
        except (MemplanError, ValueError) as exc:
            raise _NoSdpa(f"traced with eager attention only: transformers runs this model without sdpa "
                          f"({str(exc).splitlines()[0][:160]})") from None

    def full_model(self):
        """The whole model (all its layers), as memplan reads it (for a model_type no family file covers: from
        its module tree, the model profile the estimate then needs)."""
        return probe_mod.read_model(self.text, "config")

    def _profile(self, rows: dict[str, list[dict]], dims: dict[str, list]) -> dict[str, Any]:
        from memplan.memory.activations import keyed_rows_stem, rows_stem

        family = self.config["model_type"]
        text_type = self.text.get("model_type", family)
        base = json.loads(_hf_json())
        # hf-<family> (+ -seq-cls for a score head); a user's trace adds the structure key, so that two configs of
        # one model_type keep their own rows (memory/activations.py traced_for)
        stem = keyed_rows_stem if self.keyed else rows_stem
        name = stem(self.real, family)
        aliases = [stem(self.real, text_type)] if text_type != family else []
        import torch
        import transformers

        head = self.real.head
        return {
            "name": name, "aliases": aliases,
            "traced_with": {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]},
            "description": (f"Hugging Face transformers {transformers.__version__} {text_type} modeling code on "
                            f"PyTorch {torch.__version__.split('+')[0]}, traced by `memplan trace` (measure/trace/): "
                            "every tensor saved for backward and every transient of one layer period, per layer "
                            "kind, precision mode and kernel set; bytes are per element of `elems`, summed over "
                            "the tensors of the row"),
            "family": family,
            "frozen_modes": list(step.FROZEN_MODES),
            "sources": [
                f"traced: {text_type} at {len(self.kind_of_layer)} "
                f"layer(s) ({', '.join(spec.kind for spec in self.kinds)}) and its {head.describe()} "
                "under FakeTensorMode; "
                f"variants: attention {dims['attention']}, recompute {dims['recompute']}"
                + ("" if dims["window"] == [None] else ", windows longer/shorter than the sequence")
                + ("" if dims["dropout"] == [True] else ", with and without dropout")
                + f"; and every parameter frozen (LoRA's base) in mode {'/'.join(step.FROZEN_MODES)}",
                "CUDA kernels emulated on the CPU where they keep other tensors (memplan/measure/trace/emulate.py): "
                "fused dropout's bool mask, fp32 layer-norm statistics, flash/memory-efficient sdpa (q, k, v, "
                "output, fp32 log-sum-exp, the mask when given) and CUDA's autocast op lists; `cpu_bytes` are "
                "PyTorch's CPU kernels",
                *base.get("sources", [])[4:5],
            ] + [f"note: {n}" for n in self.notes],
            **{region: rows.get(region, []) for region in analyze.REGIONS},
            "family_flags": {},
            "activation_saves": {},
            "optimizer_temporaries": base["optimizer_temporaries"],
            "master_grad_copy_bytes": base["master_grad_copy_bytes"],
            "gradient_bucket_bytes": base.get("gradient_bucket_bytes", 0),
        }


class _NoSdpa(Exception):
    pass


_WORKER: tuple | None = None  # (tracer, learned) inherited by forked workers


def _work(v: step.Variant):
    tracer, learned, total, index = _WORKER[0], _WORKER[1], _WORKER[2], _WORKER[3]
    import torch

    torch.set_num_threads(1)
    tracer.say(f"[{index[v]}/{total}] {tracer._describe(v)}")
    try:
        return v, tracer.items(v, 1, learned)[0], None
    except (ShapeError, MemplanError) as exc:
        return v, None, str(exc)


def _run_many(tracer: Tracer, variants: list[step.Variant], learned: dict, workers: int | None):
    """The variants, in forked worker processes (one per core, at most 4), or in this one."""
    import multiprocessing
    import os

    global _WORKER
    n = workers if workers is not None else min(4, os.cpu_count() or 1)
    index = {v: i + 2 for i, v in enumerate(variants)}
    _WORKER = (tracer, learned, len(variants) + 1, index)
    out = {}
    try:
        if n > 1 and "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(n) as pool:
                done = pool.map(_work, variants, chunksize=1)
        else:
            done = [_work(v) for v in variants]
    finally:
        _WORKER = None
    for v, items, err in done:
        if err is not None:
            raise MemplanError(f"trace ({tracer._describe(v)}): {err}")
        out[v] = items
    return out


def _hf_json() -> str:
    from memplan.catalog import profiles_dir

    return (profiles_dir() / "implementations" / "hf.json").read_text()


def dumps(prof: dict[str, Any]) -> str:
    """The profile as JSON, one row per line (the rows of a region read as a table; the file stays small)."""
    lines = ["{"]
    items = list(prof.items())
    for i, (key, value) in enumerate(items):
        end = "," if i < len(items) - 1 else ""
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows = ",\n".join("  " + json.dumps(v, separators=(", ", ": ")) for v in value)
            lines.append(f" {json.dumps(key)}: [\n{rows}\n ]{end}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def trace_profile(config: dict[str, Any], progress: Progress | None = None, workers: int | None = None,
                  keyed: bool = False) -> dict[str, Any]:
    """The traced implementation profile of `config`'s family, as a JSON-ready dict (checked against the
    ImplementationProfile schema).  `workers`: processes tracing variants at once (default: the cores, at most 4).
    `keyed`: named by the config's structure (hf-<family>-<key>: `memplan trace`), not the family's (shipped rows)."""
    from memplan.memory.implementations import ImplementationProfile

    prof = Tracer(config, progress, keyed).run(workers)
    ImplementationProfile.model_validate(prof)
    return prof
