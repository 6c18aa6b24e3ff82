"""Regenerate the traced implementation profiles (profiles/implementations/hf-<family>.json), one per built-in
family, by `memplan trace` of the family's representative model profile.

    python scripts/trace_profiles.py            # every family
    python scripts/trace_profiles.py llama gpt2 # some
    python scripts/trace_profiles.py --out-dir /tmp/traced llama  # elsewhere
    python scripts/trace_profiles.py --seq-cls llama qwen3  # the sequence-classification (reward) head's rows

--seq-cls traces the representative with transformers' score head (AutoModelForSequenceClassification, num_labels
1, as TRL builds reward and value models: families/heads.py) into hf-<family>-seq-cls.json; the estimate reads
them for a model whose head is a score head (memplan/measure/trace SEQ_CLS are those shipped).

Needs torch and transformers.  The profile records the torch and transformers versions it was traced with; rerun
after upgrading either.  Each family takes seconds to a minute on two cores (benchmarks/bench_trace.py): all 19 took
about 10 minutes on two shared cores (10-110 s each; llama4, deepseek_v3 and gemma3 the longest).  A row's `name`
says what its tensors are (memplan/measure/trace/names.py, applied as the rows are made), its `detail` the aten
ops behind it; renaming rows means changing names.py and rerunning this script, never editing the JSON.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path



def main(argv: list[str]) -> int:
    from memplan.catalog import profiles_dir, resolve_model
    from memplan.measure.trace.profile import dumps, trace_profile

    from memplan.families.heads import as_sequence_classifier

    out_dir = None
    seq_cls = "--seq-cls" in argv
    argv = [a for a in argv if a != "--seq-cls"]
    if "--out-dir" in argv:
        i = argv.index("--out-dir")
        out_dir, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2:]
    from memplan.measure.trace import REPRESENTATIVE, SEQ_CLS

    families = argv or (sorted(SEQ_CLS) if seq_cls else sorted(REPRESENTATIVE))
    unknown = [f for f in families if f not in REPRESENTATIVE]
    if unknown:
        print(f"unknown families {unknown}; known: {', '.join(sorted(REPRESENTATIVE))}", file=sys.stderr)
        return 2
    out_dir = out_dir or profiles_dir() / "implementations"
    out_dir.mkdir(parents=True, exist_ok=True)
    for family in families:
        t = time.time()
        spec = resolve_model(REPRESENTATIVE[family])
        if seq_cls:
            spec = as_sequence_classifier(spec, 1)
        prof = trace_profile(spec.hf_config, progress=lambda m: print(f"  {family}: {m}", file=sys.stderr))
        prof["sources"].insert(0, f"traced from the built-in profile {spec.name}"
                                  + (" with a score head (num_labels 1)" if seq_cls else "")
                                  + " (scripts/trace_profiles.py" + (" --seq-cls)" if seq_cls else ")"))
        path = Path(out_dir) / f"{prof['name']}.json"
        path.write_text(dumps(prof))
        rows = sum(len(v) for k, v in prof.items() if isinstance(v, list) and v and isinstance(v[0], dict))
        print(f"{family}: {path.name}, {rows} rows, {time.time() - t:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
