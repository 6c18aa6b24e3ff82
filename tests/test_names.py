"""Model names as users paste them from the Hugging Face hub.

A hub id of a built-in model resolves (any case, with the -Instruct/-chat/-hf/-it/-base variants that share the
base's architecture); a hub id that is not built in is one line: not built in, the offline-friendly command
to fetch its config.json, and the closest built-in names.  The repository names and what they are come from
the hub model cards cited in each profile's `source`.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memplan import catalog
from memplan.errors import MemplanError

PROFILES = Path(__file__).resolve().parent.parent / "profiles"


@pytest.mark.parametrize("typed, expected", [
    ("meta-llama/Llama-2-7b-chat-hf", "llama-2-7b"),
    ("meta-llama/Llama-2-13b-chat-hf", "llama-2-13b"),
    ("NousResearch/Llama-2-7b-hf", "llama-2-7b"),  # a mirror of the same repository under another org
    ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b"),
    ("QWEN/QWEN2.5-7B-INSTRUCT", "qwen2.5-7b"),
    ("qwen/qwen2.5-7b-instruct", "qwen2.5-7b"),
    ("mistralai/Mistral-7B-Instruct-v0.1", "mistral-7b"),  # v0.1 instruct = v0.1 base architecture
    ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mixtral-8x7b"),
    ("meta-llama/Meta-Llama-3-8B-Instruct", "llama-3-8b"),
    ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
    ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.3-70b"),
    ("tiiuae/falcon-7b-instruct", "falcon-7b"),
    ("Llama-2-7b-chat-hf", "llama-2-7b"),
])
def test_hub_ids_of_built_in_models_resolve(typed, expected):
    assert catalog.get_model_profile(typed).name == expected
    assert catalog.resolve_model(typed).name == expected  # the CLI's MODEL path: not taken for a file path


@pytest.mark.parametrize("hub_id, closest", [
    ("Qwen/Qwen3-4B", ["qwen3-8b"]),
    # v0.2 dropped the sliding window and v0.3 grew the vocabulary: not the mistral-7b (v0.1) architecture
    ("mistralai/Mistral-7B-Instruct-v0.2", ["mistral-7b"]),
    ("mistralai/Mistral-7B-v0.3", ["mistral-7b"]),
    ("TheBloke/Llama-2-7B-GPTQ", None),  # a 4-bit repackaging: other bytes than the bf16 profile
    ("ibm-granite/granite-3.1-8b-base", []),
])
def test_other_hub_ids_say_how_to_fetch_their_config(hub_id, closest):
    with pytest.raises(MemplanError) as err:
        catalog.resolve_model(hub_id)
    msg = str(err.value)
    folder = hub_id.rsplit("/", 1)[-1]
    assert "\n" not in msg and msg.startswith(f"{hub_id!r} is not a built-in model")
    assert f"`hf download {hub_id} config.json --local-dir {folder}`" in msg and "--download" in msg
    assert f"pass {folder} as MODEL" in msg
    if closest == []:
        assert "no built-in profile is close" in msg
    elif closest:
        assert "closest built-in: " + ", ".join(repr(c) for c in closest) in msg
    else:
        assert "closest built-in: 'llama-2-7b'" in msg


def test_cli_prints_the_hint_as_one_error_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "memplan", "estimate", "Qwen/Qwen3-4B"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("memplan: error: 'Qwen/Qwen3-4B' is not a built-in")


@pytest.mark.parametrize("text, hub", [
    ("Qwen/Qwen3-4B", True), ("meta-llama/Llama-2-7b-chat-hf", True), ("./Qwen/Qwen3-8B", False),
    ("/models/qwen3", False), ("~/Qwen3-8B", False), ("a/b/c", False), ("org/config.json", False),
    ("llama-2-7b", False),
])
def test_what_counts_as_a_hub_id(text, hub):
    assert catalog.is_hub_id(text) is hub


# https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json (the fields that shape the model)
LLAMA2_7B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "hidden_act": "silu",
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "tie_word_embeddings": False, "vocab_size": 32000,
    "torch_dtype": "float16",
}


def test_a_downloaded_config_folder_is_read_not_mistaken_for_a_hub_id(tmp_path, monkeypatch):
    """What the hint says to do works: a folder named like the repository (ORG/NAME here), with its config.json."""
    (tmp_path / "meta-llama" / "Llama-2-7b-local").mkdir(parents=True)
    (tmp_path / "meta-llama" / "Llama-2-7b-local" / "config.json").write_text(json.dumps(LLAMA2_7B_CONFIG))
    monkeypatch.chdir(tmp_path)
    assert catalog.resolve_model("meta-llama/Llama-2-7b-local").parameters.total == 6_738_415_616


@pytest.fixture
def catalog_with_a_new_profile(tmp_path, monkeypatch):
    """A copy of profiles/ plus one new model profile, as the lead adds them: no code change, only a file."""
    root = tmp_path / "profiles"
    shutil.copytree(PROFILES, root, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    data = json.loads((root / "models" / "llama-2-7b.json").read_text())
    data.update(name="acme-7b", aliases=["acme/Acme-7B"])
    (root / "models" / "acme-7b.json").write_text(json.dumps(data))
    monkeypatch.setenv("MEMPLAN_PROFILES", str(root))
    catalog.clear_caches()
    yield
    monkeypatch.delenv("MEMPLAN_PROFILES")
    catalog.clear_caches()


def test_new_profiles_get_the_same_forgiving_names(catalog_with_a_new_profile):
    for typed in ("acme/Acme-7B-Instruct", "ACME/acme-7b-chat-hf", "someone/Acme-7B-it", "acme-7b-base"):
        assert catalog.get_model_profile(typed).name == "acme-7b"
    with pytest.raises(MemplanError, match=r"not a built-in model.*closest built-in: 'acme-7b'"):
        catalog.get_model_profile("acme/Acme-13B")


# ---- --download: only config.json, through huggingface_hub (no network in tests: its download is stood in for)
def _fake_hub(monkeypatch, tmp_path, raises=None):
    """huggingface_hub.hf_hub_download replaced: it writes a real Qwen3 config where huggingface_hub's cache
    would put it (models--ORG--NAME/snapshots/<sha>/config.json), or raises `raises` as the client does."""
    import json

    import huggingface_hub

    calls = []

    def fake(repo_id, filename, **kw):
        calls.append((repo_id, filename))
        if raises is not None:
            raise raises
        org, name = repo_id.split("/")
        snap = tmp_path / f"models--{org}--{name}" / "snapshots" / ("0" * 40)
        snap.mkdir(parents=True, exist_ok=True)
        cfg = catalog.get_model_profile("qwen3-8b").hf_config
        (snap / filename).write_text(json.dumps(cfg))
        return str(snap / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return calls


def test_download_fetches_only_the_config_and_names_the_model_after_the_repo(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from memplan.cli.group import cli

    calls = _fake_hub(monkeypatch, tmp_path)
    out = CliRunner().invoke(cli, ["estimate", "Qwen/Qwen3-4B", "--download", "--seq", "1024", "--json"])
    assert out.exit_code == 0, out.output
    assert calls == [("Qwen/Qwen3-4B", "config.json")]
    import json

    est = json.loads(out.stdout)
    assert est["model"] == "Qwen3-4B"
    assert est["parameters"] == catalog.get_model_profile("qwen3-8b").parameters.total


@pytest.mark.parametrize("error, words", [
    ("LocalEntryNotFoundError", "offline"),
    ("GatedRepoError", "hf auth login"),
])
def test_download_failures_are_one_line(monkeypatch, tmp_path, error, words):
    from huggingface_hub import errors as hub_errors

    exc_type = getattr(hub_errors, error)
    try:
        exc = exc_type("boom")
    except TypeError:  # HTTP errors want the response they came with
        from types import SimpleNamespace

        response = SimpleNamespace(headers={}, request=None, status_code=403)  # what the error reads of it
        exc = exc_type("boom", response=response)
    _fake_hub(monkeypatch, tmp_path, raises=exc)
    with pytest.raises(MemplanError) as err:
        catalog.download_config("meta-llama/Llama-3.1-8B")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--download: meta-llama/Llama-3.1-8B") and words in msg
