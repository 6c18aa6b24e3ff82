"""Trace ergonomics (issue 20 item 7): rows keyed by the config's structure, names never shadowed by a folder, the
release the rows were traced under recorded and compared with the installed one.

The traces here are stand-ins (the hand-written rows under the keyed name; tests/test_trace.py runs real ones):
what is tested is where `memplan trace` writes and what `memplan estimate` then reads."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

from tests.helpers import run_cli  # noqa: E402

GRANITE = {"model_type": "granite", "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
           "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 128, "max_position_embeddings": 64}


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    """A user's catalog (MEMPLAN_PROFILES) with the shipped GPUs etc. and no traced rows; traces are stand-ins."""
    from memplan import catalog as cat
    from memplan.measure.trace import profile

    shipped = Path(str(cat.profiles_dir()))
    root = tmp_path / "profiles"
    root.mkdir()
    for entry in shipped.iterdir():
        if entry.is_dir() and entry.name not in ("models", "implementations", "__pycache__"):
            (root / entry.name).symlink_to(entry)
    (root / "models").mkdir()
    (root / "implementations").mkdir()
    (root / "implementations" / "hf.json").write_text((shipped / "implementations" / "hf.json").read_text())
    monkeypatch.setenv("MEMPLAN_PROFILES", str(root))
    cat.clear_caches()
    calls = []

    def fake_trace(data, progress=None, workers=None, keyed=False):
        from memplan.measure.trace.probe import read_model, text_config, with_class_defaults
        from memplan.memory.activations import keyed_rows_stem, rows_stem

        calls.append(data)
        m = read_model(with_class_defaults(text_config(data)))
        prof = json.loads((shipped / "implementations" / "hf.json").read_text())
        prof.update(name=(keyed_rows_stem if keyed else rows_stem)(m, data["model_type"]),
                    family=data["model_type"], sources=[],
                    traced_with={"transformers": tf.__version__, "torch": "2.13.0"})
        return prof

    monkeypatch.setattr(profile, "trace_profile", fake_trace)
    monkeypatch.chdir(tmp_path)
    yield root, calls
    cat.clear_caches()


def _config(folder: Path, **kw) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**GRANITE, **kw}))
    return folder


def _rows(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "implementations").glob("hf-granite-*.json"))


def test_two_configs_of_one_model_type_keep_their_own_rows(catalog, capsys):
    root, calls = catalog
    a = _config(Path("granite-silu"))
    b = _config(Path("granite-gelu"), hidden_act="gelu")  # another activation: other saved tensors
    assert run_cli(capsys, "trace", a)[0] == 0
    assert run_cli(capsys, "trace", b)[0] == 0
    rows = _rows(root)
    assert len(rows) == 2 and all(re.fullmatch(r"hf-granite-[0-9a-f]{8}\.json", r) for r in rows)
    used = set()
    for name in ("granite-silu", "granite-gelu"):
        code, out, err = run_cli(capsys, "estimate", name, "--json")
        assert code == 0, err
        used.add(json.loads(out)["activation_profile"])
    assert used == {r.removesuffix(".json") for r in rows}


def test_a_config_of_a_traced_structure_is_not_traced_again(catalog, capsys):
    root, calls = catalog
    assert run_cli(capsys, "trace", _config(Path("granite-small")))[0] == 0
    bigger = _config(Path("granite-bigger"), hidden_size=128, intermediate_size=256, num_hidden_layers=4)
    code, _, err = run_cli(capsys, "trace", bigger)
    assert code == 0, err
    assert len(calls) == 1 and "not traced again" in err
    assert len(_rows(root)) == 1 and (root / "models" / "granite-bigger.json").is_file()
    code, out, err = run_cli(capsys, "estimate", "granite-bigger", "--json")
    assert code == 0 and json.loads(out)["activation_profile"] == _rows(root)[0].removesuffix(".json")


def test_the_printed_name_is_not_shadowed_by_a_folder_of_that_name(catalog, capsys):
    """The config's own folder is named like the model profile trace writes: `estimate NAME` from that directory
    reads the profile (before: the folder, a model_type without a family file: refused)."""
    root, _ = catalog
    folder = _config(Path("granite-tiny"))
    code, _, err = run_cli(capsys, "trace", "granite-tiny/config.json")
    assert code == 0, err
    assert "`memplan estimate granite-tiny`" in err and folder.is_dir()
    code, out, err = run_cli(capsys, "estimate", "granite-tiny")
    assert code == 0, err
    assert out.startswith("granite-tiny: ") and "activation rows hf-granite-" in out
    # the path of the config that was traced reads the profile traced from it (the same config, byte for byte
    # parsed), so a user estimates what they traced by the path they traced
    code, out, err = run_cli(capsys, "estimate", "./granite-tiny")
    assert code == 0 and out.startswith("granite-tiny: ") and "activation rows hf-granite-" in out, err
    # a config changed since is not what was traced: refused with the way to trace it
    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "num_hidden_layers": data["num_hidden_layers"] + 1}))
    code, _, err = run_cli(capsys, "estimate", "./granite-tiny")
    assert code == 2 and "memplan trace" in err


def test_the_rows_record_their_release_and_the_estimate_compares(catalog, capsys, monkeypatch):
    from memplan import versions

    root, _ = catalog
    assert run_cli(capsys, "trace", _config(Path("granite-old")))[0] == 0
    path = root / "implementations" / _rows(root)[0]
    prof = json.loads(path.read_text())
    assert prof["traced_with"]["transformers"] == tf.__version__
    code, out, _ = run_cli(capsys, "estimate", "granite-old", "--json")
    assert not [w for w in json.loads(out)["warnings"] if "traced with" in w]
    prof["traced_with"]["transformers"] = "5.0.0"
    path.write_text(json.dumps(prof))
    from memplan.catalog import clear_caches

    clear_caches()
    monkeypatch.setattr(versions, "installed_version", lambda d: tf.__version__ if d == "transformers" else None)
    code, out, _ = run_cli(capsys, "estimate", "granite-old", "--json")
    drift = [w for w in json.loads(out)["warnings"] if "traced with" in w]
    assert drift == [f"activation rows {path.stem} traced with transformers 5.0.0; {tf.__version__} is installed, "
                     "whose modeling code may keep other tensors: `pip install transformers==5.0.0` is the release "
                     "they describe, `memplan trace` re-traces with yours"]


def test_the_structure_key_ignores_sizes_and_sees_structure():
    from memplan.families.heads import score_head
    from memplan.memory.activations import structure_key
    from memplan.families.registry import read_config

    base = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128}
    key = structure_key(read_config(base))
    assert key == structure_key(read_config({**base, "hidden_size": 128, "intermediate_size": 300,
                                             "num_hidden_layers": 5, "vocab_size": 1000}))
    assert key != structure_key(read_config({**base, "num_key_value_heads": 4}))  # GQA -> MHA
    assert key != structure_key(read_config({**base, "hidden_act": "gelu"}))
    # a bias saves nothing more (the linear's backward needs its input either way): the same rows
    assert key == structure_key(read_config({**base, "attention_bias": True}))
    assert key != structure_key(score_head(read_config(base), 1))
    assert os.sep not in key and re.fullmatch(r"[0-9a-f]{8}", key)


@pytest.fixture
def user_catalog(tmp_path, monkeypatch):
    """No MEMPLAN_PROFILES: the installed profiles plus memplan's user catalog under $MEMPLAN_HOME."""
    from memplan import catalog as cat
    from memplan.measure.trace import profile

    monkeypatch.delenv("MEMPLAN_PROFILES", raising=False)
    monkeypatch.setenv("MEMPLAN_HOME", str(tmp_path / "home"))
    cat.clear_caches()
    shipped = Path(str(cat.profiles_dir()))

    def fake_trace(data, progress=None, workers=None, keyed=False):
        from memplan.measure.trace.probe import read_model, text_config, with_class_defaults
        from memplan.memory.activations import keyed_rows_stem

        m = read_model(with_class_defaults(text_config(data)))
        prof = json.loads((shipped / "implementations" / "hf.json").read_text())
        prof.update(name=keyed_rows_stem(m, data["model_type"]), family=data["model_type"], sources=[],
                    traced_with={"transformers": tf.__version__, "torch": "2.13.0"})
        return prof

    monkeypatch.setattr(profile, "trace_profile", fake_trace)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield tmp_path / "home" / "profiles", shipped
    cat.clear_caches()


def test_trace_then_estimate_works_from_any_folder_through_the_user_catalog(user_catalog, capsys, tmp_path,
                                                                           monkeypatch):
    """A new user traces a config and estimates it, by its name or its path, from another folder too; nothing is
    written into the installed profiles or the working folder."""
    home, shipped = user_catalog
    before = sorted(p.name for p in (shipped / "implementations").iterdir())
    _config(Path("granite-mine"))
    code, _, err = run_cli(capsys, "trace", "granite-mine")
    assert code == 0, err
    assert f"user catalog {home}" in err and "`memplan estimate granite-mine`" in err
    assert (home / "models" / "granite-mine.json").is_file() and len(list(home.glob("implementations/hf-granite-*")))
    assert sorted(p.name for p in Path.cwd().iterdir()) == ["granite-mine"]
    assert sorted(p.name for p in (shipped / "implementations").iterdir()) == before
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for model in ("granite-mine", str(tmp_path / "work" / "granite-mine")):
        code, out, err = run_cli(capsys, "estimate", model)
        assert code == 0, err
        assert out.startswith("granite-mine: ") and "activation rows hf-granite-" in out
    # tracing the same config again writes nothing new and is no error
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = run_cli(capsys, "trace", "granite-mine")
    assert code == 0 and "not traced again" in err, err
