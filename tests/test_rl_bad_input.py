"""Issue 24's bad-input lines through the CLI: exit 2 and one line on stderr (the API's MemplanError texts are
checked in tests/test_rl.py test_bad_input_is_one_line; G not dividing the batch through the CLI in
test_cli_bad_input_exit_2)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("args,words", [
    # a reference with another vocabulary: Llama-3 (128,256) against Qwen2.5 (152,064)
    (["--reference-model", "llama-3-8b", "--beta", "0.1"], "vocabulary of 128,256"),
    # sleep with a vLLM release that lacks it (sleep mode arrived after 0.6.x; docs/rl.md: needs >= 0.7.3)
    (["--rollout", "vllm-colocate", "--sleep-level", "2", "--vllm-version", "0.6.0"], "has no sleep mode"),
])
def test_cli_bad_input_one_line_exit_2(capsys, args, words):
    from memplan.cli import main

    assert main(["rl", "qwen2.5-7b", "-g", "h100-sxm", "--no-search", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err
