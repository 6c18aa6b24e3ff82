"""measure/tracker.py: storage accounting by hand, and against PyTorch's own MemTracker on the same step."""
from __future__ import annotations

import gc

import pytest

torch = pytest.importorskip("torch")

from memplan.measure.runner import _Phases, _register, _Step  # noqa: E402
from memplan.measure.tracker import StorageTracker  # noqa: E402
from tests.measure_archs import setup  # noqa: E402


def test_views_count_once_and_frees_are_seen():
    t = StorageTracker("cpu")
    t.set_phase("optimizer_step")
    with t:
        a = torch.empty(1000, dtype=torch.float32)  # 4000 B
        v = a.view(10, 100)[2:5]  # a view: same storage, adds nothing
        a.add_(1)  # in place: same storage
        assert t.total == 4000
        b = torch.empty(250, dtype=torch.bfloat16)  # 500 B
        assert t.total == 4500
        del a
        assert t.total == 4500  # the view still holds the storage
        del v
        gc.collect()
        assert t.total == 500
        del b
    assert t.total == 0
    assert t.peak == 4500 and t.current["temporaries"] == 0


def test_activations_are_forward_storages_alive_at_backward_start():
    torch.manual_seed(0)
    w = torch.randn(16, 8, requires_grad=True)  # 512 B, registered as weights
    x = torch.randn(4, 16)  # 256 B, registered as other
    t = StorageTracker("cpu")
    t.track(w, "weights")
    t.track(x, "other")
    t.watch_gradients([w])
    with t:
        t.set_phase("forward")
        h = x @ w  # 4x8 fp32 = 128 B; saved by pow() below
        loss = h.pow(2).sum()  # pow's output (128 B) dies after sum; the 4 B loss stays alive
        del h
        t.set_phase("backward")
        # saved by autograd: h (128 B, pow's input) + the loss scalar we still hold (4 B); x is "other" already
        assert t.activations_at_backward_start == 128 + 4
        loss.backward()
        assert t.current["gradients"] == 512  # w.grad, moved from temporaries by the accumulate hook
        del loss
        gc.collect()
        assert t.current["activations"] == 0  # backward freed what was saved
    t.remove_hooks()
    # forward peak: w + x + h + pow(h) + the sum's 4 B output, allocated before pow(h) is released
    assert t.phase_peaks["forward"][0] == 512 + 256 + 128 + 128 + 4


def _steady_step(precision="fp32", optimizer="adamw"):
    step = _Step(setup("llama", precision, optimizer, micro_batch=2, seq=32), "cpu", "reference", None, seed=0)
    step.run(_Phases([]))  # warm-up: optimizer states exist from here on
    gc.collect()
    return step


@pytest.mark.parametrize("optimizer", ["adamw", "sgd-momentum"])
def test_same_peak_as_pytorch_memtracker(optimizer):
    from torch.distributed._tools.mem_tracker import MemTracker

    step = _steady_step(optimizer=optimizer)
    mt = MemTracker()
    mt.track_external(step.built.module, step.optimizer, step.input_ids, step.targets)
    with mt:
        step.run(_Phases([]))
    gc.collect()
    theirs = mt.get_tracker_snapshot("peak")[torch.device("cpu")]

    ours = StorageTracker("cpu")
    _register(ours, step)
    with ours:
        step.run(_Phases([ours]))
    ours.remove_hooks()
    assert ours.peak == theirs["Total"]
    # the model-state categories agree too (theirs: Parameter, Buffer, Optstate; buffers are our "other")
    assert ours.peak_bytes["weights"] == theirs["Parameter"]
    assert ours.peak_bytes["optimizer_states"] == theirs["Optstate"]
