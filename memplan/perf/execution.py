"""Which execution profile a setup runs with (profiles/execution/*.json, spec/execution.py): the one named, else
the one whose `default_for` lists the layout's engine."""
from __future__ import annotations

from functools import lru_cache

from memplan.errors import MemplanError
from memplan.spec.execution import ExecutionProfile


@lru_cache(maxsize=None)
def execution_profiles() -> dict[str, ExecutionProfile]:
    from memplan.catalog import load_kind

    return load_kind("execution", ExecutionProfile)


def execution_profile(name: str | None, engine: str = "plain") -> ExecutionProfile:
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            raise MemplanError("--execution needs a profile name (profiles/execution/: "
                               + ", ".join(sorted(execution_profiles())) + ")")
        from memplan.catalog import normalize
        from memplan.errors import did_you_mean

        profiles = execution_profiles()
        for stem, p in profiles.items():
            if normalize(name) in {normalize(x) for x in (stem, p.name, *p.aliases)}:
                return p
        raise MemplanError(did_you_mean(name, profiles, "execution profile") + " (profiles/execution/)")
    for p in execution_profiles().values():
        if engine in p.default_for:
            return p
    raise MemplanError(f"no execution profile is the default for --engine {engine}; pass --execution NAME")
