"""Configs transformers writes for Mamba-2-style models hold time_step_limit = (0.0, inf) (issue 20): bare Infinity
(json.dumps of the dict) or {"__float__": "Infinity"} (transformers 5's PreTrainedConfig.to_json_string); both read,
as transformers reads them back.  A non-finite number anywhere else is still refused with its field."""
import json
import math
from pathlib import Path

import pytest

from memplan.errors import MemplanError
from memplan.families.hf import read_json


@pytest.mark.parametrize("model_type", ["mamba2", "falcon_h1", "nemotron_h", "bamba"])
def test_config_transformers_writes_reads_as_transformers_reads_it(tmp_path: Path, model_type: str) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(model_type)
    config.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    assert '"__float__": "Infinity"' in text  # the spelling transformers 5 writes
    ours = read_json(tmp_path / "config.json")
    theirs = type(config).from_pretrained(tmp_path).time_step_limit
    assert list(ours["time_step_limit"]) == list(theirs)
    assert math.isinf(ours["time_step_limit"][1])


def test_bare_infinity_in_time_step_limit(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    p.write_text('{"model_type": "mamba2", "time_step_limit": [0.0, Infinity]}')
    assert read_json(p)["time_step_limit"] == [0.0, float("inf")]


@pytest.mark.parametrize("text, field, shown", [
    ('{"model_type": "llama", "rope_theta": Infinity}', "rope_theta", "Infinity"),
    ('{"model_type": "llama", "hidden_size": {"__float__": "NaN"}}', "hidden_size", "NaN"),
    ('{"model_type": "llama", "rope_scaling": {"factor": {"__float__": "-Infinity"}}}', "rope_scaling.factor",
     "-Infinity"),
])
def test_non_finite_elsewhere_is_refused_with_its_field(tmp_path: Path, text: str, field: str, shown: str) -> None:
    p = tmp_path / "config.json"
    p.write_text(text)
    with pytest.raises(MemplanError) as err:
        read_json(p)
    assert str(err.value) == f"config file {p}: field {field} is {shown}; give a finite number"


def test_an_object_that_only_looks_like_a_tag_is_kept(tmp_path: Path) -> None:
    p = tmp_path / "config.json"
    p.write_text(json.dumps({"model_type": "llama", "x": {"__float__": "pi"}}))
    assert read_json(p)["x"] == {"__float__": "pi"}
