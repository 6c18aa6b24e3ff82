"""Loads the data in profiles/ into spec objects, and resolves names the way users type them.

Adding a GPU, a model, an interconnect or an implementation is adding a JSON file: nothing here changes.
Names are forgiving: case, spaces, '-', '_' and '.' are ignored ('A100 80GB' == 'a100-80gb'), and each
profile may list `aliases`.  A Hugging Face hub id resolves to the built-in profile of the same model, also as
its -Instruct/-chat/-hf/-it/-base variant; any other hub id gets how to fetch its config.json.  Unknown names
get a did-you-mean.

profiles/ ships inside the package as `memplan.profiles` (setup.py maps the folder) and is read through
importlib.resources, so it works from a wheel, an editable install and a source checkout alike;
$MEMPLAN_PROFILES points at another folder of the same shape.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ValidationError

from memplan.errors import MemplanError, did_you_mean
from memplan.spec.hardware import GPUSpec, InterconnectSpec
from memplan.spec.model import ModelSpec

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

T = TypeVar("T", bound=BaseModel)

PROFILES_PACKAGE = "memplan.profiles"


def profiles_dir() -> Traversable:
    """$MEMPLAN_PROFILES, else the profiles installed with this package (a Traversable: `/`, iterdir(),
    read_text(); a real folder for a wheel or an editable install)."""
    env = os.environ.get("MEMPLAN_PROFILES")
    if env:
        return Path(env).expanduser()
    try:
        from importlib.resources import files

        return files(PROFILES_PACKAGE)
    except ModuleNotFoundError:  # a source checkout on sys.path that was never installed
        return Path(__file__).resolve().parent.parent / "profiles"


USER_KINDS = ("models", "implementations")  # what a user makes (`memplan trace`): the rest ships with memplan


def user_profiles_dir() -> Path | None:
    """memplan's user catalog: the model profiles and activation rows `memplan trace` writes, read before the
    installed ones.  $MEMPLAN_HOME/profiles, else $XDG_DATA_HOME/memplan/profiles, else
    ~/.local/share/memplan/profiles (the XDG Base Directory specification's data home).  None when
    $MEMPLAN_PROFILES names the one catalog to read."""
    if os.environ.get("MEMPLAN_PROFILES"):
        return None
    home = os.environ.get("MEMPLAN_HOME")
    if home:
        return Path(home).expanduser() / "profiles"
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join("~", ".local", "share")
    return Path(data_home).expanduser() / "memplan" / "profiles"


def _folders(kind: str) -> list:
    """Where profiles of `kind` are read, first match first: the user catalog (models and rows only), then the
    installed profiles (or $MEMPLAN_PROFILES)."""
    user = user_profiles_dir() if kind in USER_KINDS else None
    try:
        mine = [user / kind] if user is not None and (user / kind).is_dir() else []
    except OSError:  # an unreadable home: the installed profiles still answer
        mine = []
    return mine + [_folder(kind)]


def _profile_file(kind: str, stem: str):
    """The file of profile `stem` of `kind`, the user's before the installed one; None if neither has it."""
    for folder in _folders(kind):
        if (folder / f"{stem}.json").is_file():
            return folder / f"{stem}.json"
    return None


def runs_dir() -> Path:
    """Where `memplan profile --out auto` writes records: profiles/runs/ when profiles is a folder of a source
    checkout or $MEMPLAN_PROFILES (records are data to commit), else ./memplan-runs (never into site-packages)."""
    root = profiles_dir()
    if isinstance(root, Path) and (os.environ.get("MEMPLAN_PROFILES") or (root.parent / "pyproject.toml").is_file()):
        return root / "runs"
    return Path.cwd() / "memplan-runs"


def normalize(name: str) -> str:
    return re.sub(r"[\s\-_.]+", "", name.lower())


def _folder(kind: str):
    folder = profiles_dir() / kind
    if not folder.is_dir():
        raise MemplanError(f"profile folder {folder} is missing; reinstall memplan (`pip install .`) or set "
                           "MEMPLAN_PROFILES to a folder holding gpus/, models/, interconnects/, ...")
    return folder


@lru_cache(maxsize=None)
def _read(kind: str, stem: str) -> tuple[dict, str]:
    """One profile's JSON (parsed, not validated) and where it is."""
    entry = _profile_file(kind, stem) or _folder(kind) / f"{stem}.json"
    try:
        data = json.loads(entry.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MemplanError(f"bad profile {entry}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise MemplanError(f"bad profile {entry}: not a JSON object")
    return data, str(entry)


@lru_cache(maxsize=None)
def _raw(kind: str) -> dict[str, tuple[dict, str]]:
    """stem -> (the profile's JSON, where it is), parsed but not validated: a lookup validates only its match."""
    stems = sorted({e.name.removesuffix(".json") for folder in _folders(kind) for e in folder.iterdir()
                    if e.name.endswith(".json")})
    return {stem: _read(kind, stem) for stem in stems}


@lru_cache(maxsize=None)
def _load_one(kind: str, model: type[T], stem: str) -> T:
    data, where = _read(kind, stem)
    try:
        return _parse_profile(model, data, where)
    except (ValidationError, ValueError) as exc:
        raise MemplanError(f"bad profile {where}: {str(exc).splitlines()[0]}") from None


def clear_caches() -> None:
    """Forget loaded profiles (after $MEMPLAN_PROFILES changes: tests)."""
    for f in (_read, _raw, _load_one, _name_index, data_table):
        f.cache_clear()


def load_kind(kind: str, model: type[T]) -> dict[str, T]:
    """Every profile of a kind (profiles/<kind>/*.json), validated as `model`, by file stem."""
    return {stem: _load_one(kind, model, stem) for stem in _raw(kind)}





def _parse_profile(model: type[T], data: dict, where: str) -> T:
    if model is ModelSpec:  # a model profile's architecture is its family's config.json (families/profiles.py)
        from memplan.families.profiles import model_from_profile

        return model_from_profile(data, where)  # type: ignore[return-value]
    return model.model_validate(data)


@lru_cache(maxsize=None)
def _name_index(kind: str) -> dict[str, str]:
    """normalized name or alias -> profile stem, from the raw JSON (no validation)."""
    index: dict[str, str] = {}
    for stem, (data, _) in _raw(kind).items():
        aliases = data.get("aliases") if isinstance(data.get("aliases"), list) else []
        for n in (stem, data.get("name") or stem, *aliases):
            if isinstance(n, str):
                index.setdefault(normalize(n), stem)
    return index


_PROFILE_STEM = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")  # how the shipped profiles' files are named


def _find(kind: str, model: type[T], name: str) -> T | None:
    # a profile's own file name (what `memplan models` lists, and hf-<family>) reads that file alone: the name
    # index parses every profile of the kind (the traced implementations are large), ~15 ms of each start-up
    for stem in dict.fromkeys((name, name.lower().replace("_", "-"))):
        if _PROFILE_STEM.fullmatch(stem) and _profile_file(kind, stem) is not None:
            return _load_one(kind, model, stem)
    stem = _name_index(kind).get(normalize(name))
    return None if stem is None else _load_one(kind, model, stem)


def _lookup(kind: str, model: type[T], name: str, what: str) -> T:
    found = _find(kind, model, name)
    if found is not None:
        return found
    several = _starting_with(kind, name)
    if len(several) > 1:  # `--gpu a100`: 40 or 80 GB, SXM or PCIe -- a different answer each, so ask
        raise MemplanError(f"{what} {name!r} is ambiguous: did you mean " + " / ".join(several)
                           + f"? (list them with `memplan {kind}`)")
    raise MemplanError(did_you_mean(name, _raw(kind), what) + f" (list them with `memplan {kind}`)")


def _starting_with(kind: str, name: str) -> list[str]:
    """Profiles whose name or an alias starts with what was typed (normalized), e.g. a100 -> a100-40gb, ..."""
    key = normalize(name) if isinstance(name, str) else ""
    if len(key) < 2:
        return []
    return sorted({stem for alias, stem in _name_index(kind).items() if alias.startswith(key)})


@lru_cache(maxsize=None)
def data_table(kind: str, name: str) -> dict:
    """A data table of profiles/ that is not a profile list (profiles/overheads/cuda.json, serving/vllm.json, ...),
    parsed once; a missing or broken file is one line."""
    path = profiles_dir() / kind / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MemplanError(f"cannot read {path} ({exc}); reinstall memplan or set MEMPLAN_PROFILES") from None


def models() -> dict[str, ModelSpec]:
    return load_kind("models", ModelSpec)


def gpus() -> dict[str, GPUSpec]:
    return load_kind("gpus", GPUSpec)


def interconnects() -> dict[str, InterconnectSpec]:
    return load_kind("interconnects", InterconnectSpec)


def get_model_profile(name: str) -> ModelSpec:
    """A built-in profile by name, alias or hub id (`meta-llama/Llama-2-7b-chat-hf`, `Qwen/Qwen2.5-7B-Instruct`)."""
    for candidate in hub_name_candidates(name):
        found = _find("models", ModelSpec, candidate)
        if found is not None:
            return found
    if is_hub_id(name):
        raise MemplanError(not_built_in_message(name))
    return _lookup("models", ModelSpec, name, "model")


# Suffixes that name a fine-tune or a re-packaging of the same architecture on the Hugging Face hub:
# Meta's -chat and -hf (converted to transformers' format), -Instruct (Meta, Qwen, Mistral), Google's -it,
# and -base.  Version tags (-v0.1) are kept: Mistral-7B v0.2 is not v0.1's architecture (no sliding window), so a
# version must match an alias of the profile.  Quantised repackagings (-AWQ, -GPTQ, -fp16) keep their tag and do
# not resolve: their weights take other bytes.
HUB_VARIANT_TOKENS = frozenset({"instruct", "chat", "hf", "it", "base"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def is_hub_id(text: str) -> bool:
    """ORG/NAME as the Hugging Face hub spells repositories (one '/', no leading '.', '/' or '~')."""
    return bool(_HUB_ID.match(text)) and not text.endswith(".json")


def hub_name_candidates(name: str) -> list[str]:
    """The names to look up for what the user typed: as typed, the repository name without its org, and both
    without variant tokens (`Mistral-7B-Instruct-v0.1` -> `Mistral-7B-v0.1`)."""
    bare = name.rsplit("/", 1)[-1] if is_hub_id(name) else name
    out = [name, bare]
    for text in (name, bare):
        tokens = re.split(r"[-_]", text)
        kept = [t for t in tokens if t.lower() not in HUB_VARIANT_TOKENS]
        if kept and len(kept) < len(tokens):
            out.append("-".join(kept))
    return list(dict.fromkeys(out))


def closest_models(name: str, n: int = 3) -> list[str]:
    """Built-in profile names closest to `name`, best first: those of the same family word (llama, qwen, ...)
    ranked by similarity, else only names that are very similar (a look-alike of another family is no hint)."""
    index = _name_index("models")
    key = normalize(hub_name_candidates(name)[-1])

    def similarity(stem: str) -> float:
        return max(difflib.SequenceMatcher(None, key, k).ratio() for k, s in index.items() if s == stem)

    stems = list(_raw("models"))
    same_family = [s for s in stems if (word := re.match(r"[a-z]+", normalize(s))) and word.group() in key]
    ranked = sorted(same_family or [s for s in stems if similarity(s) >= 0.75], key=similarity, reverse=True)
    return ranked[:n]


def not_built_in_message(hub_id: str) -> str:
    folder = hub_id.rsplit("/", 1)[-1]
    close = closest_models(hub_id)
    nearest = ("closest built-in: " + ", ".join(repr(c) for c in close)) if close else "no built-in profile is close"
    # `hf` is huggingface_hub's CLI since 0.34 (huggingface-cli is deprecated there and gone from 1.0 on:
    # huggingface_hub/cli/hf.py); `hf download REPO FILE --local-dir DIR` fetches that one file, no weights
    return (f"{hub_id!r} is not a built-in model (and not a file or folder here); fetch its config once with "
            f"`hf download {hub_id} config.json --local-dir {folder}` and pass {folder} as MODEL "
            f"(read offline after that), or add --download to fetch it now; {nearest} (see `memplan models`)")


def download_config(hub_id: str) -> str:
    """`--download`: fetch only the config.json of hub repository `hub_id` into huggingface_hub's cache (no
    weights; the token of `hf auth login`, HF_TOKEN and HF_HUB_OFFLINE apply as for transformers) and return
    its path.  Every failure is one line: offline, gated, missing, or huggingface_hub not installed."""
    if not isinstance(hub_id, str) or not is_hub_id(hub_id):
        raise MemplanError(f"--download needs a Hugging Face hub id (ORG/NAME, e.g. Qwen/Qwen3-8B), got {hub_id!r}")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub import errors as hub_errors
    except ImportError:
        raise MemplanError("--download needs huggingface_hub (`pip install huggingface_hub`); or fetch the file "
                           f"yourself: `hf download {hub_id} config.json --local-dir {hub_id.rsplit('/', 1)[-1]}`"
                           ) from None
    import logging
    import warnings

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.CRITICAL)  # its retry messages are not ours to print: the outcome is one line
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # etag_timeout: an unreachable hub answers in seconds (huggingface_hub's default waits 10 s a try)
            return hf_hub_download(hub_id, "config.json", etag_timeout=3)
    except hub_errors.GatedRepoError:
        why = "is gated: accept its license on huggingface.co, then log in with `hf auth login` (or set HF_TOKEN)"
    except hub_errors.RepositoryNotFoundError:
        why = "was not found on the hub (a private repository needs `hf auth login`)"
    except hub_errors.LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: first
        why = ("could not be reached (offline, or HF_HUB_OFFLINE=1) and no copy is cached: fetch config.json where "
               "there is network (`hf download ...`) and pass its folder as MODEL")
    except (hub_errors.EntryNotFoundError, hub_errors.RemoteEntryNotFoundError):
        why = "has no config.json (not a transformers model repository?)"
    except (hub_errors.HfHubHTTPError, OSError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        why = f"could not be downloaded ({type(exc).__name__}: {first})"
    except Exception as exc:  # noqa: BLE001 -- a client library's failure is the user's one line, not a traceback
        why = f"could not be downloaded ({type(exc).__name__})"
    finally:
        hub_log.setLevel(level)
    raise MemplanError(f"--download: {hub_id} {why}")


def get_gpu(name: str) -> GPUSpec:
    return _lookup("gpus", GPUSpec, name, "GPU")


def get_interconnect(name: str) -> InterconnectSpec:
    return _lookup("interconnects", InterconnectSpec, name, "interconnect")


def load_json(path: str | os.PathLike) -> dict:
    from memplan.userfiles import read_user_json  # bounded, regular files only, UTF-8, depth-limited

    return read_user_json(path)


def resolve_model(text: str, overrides: dict | None = None) -> ModelSpec:
    """MODEL as typed on the command line: a parameter count, a profile name, or a config.json path/folder.

    `overrides` are architecture fields (from --layers, --hidden, ...) applied on top; with a bare count and
    overrides, the overrides must describe a whole architecture.
    """
    from memplan.spec.units import parse_count

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    path = Path(text).expanduser()
    spec: ModelSpec
    # os.path.exists, not Path.exists: it answers False (instead of raising) for a name the OS refuses (over 255
    # bytes, NUL); a path with a "/" still goes to the reader, which says what is wrong with it
    exists = os.path.exists(path)
    if exists and _traced_profile_named(text):
        # `memplan trace` printed this name: a file or folder of the same name here (often the config's own folder)
        # does not shadow the profile it wrote
        return _with_overrides(get_model_profile(text), overrides)
    if exists or "/" in text or text.endswith(".json"):
        from memplan.families.hf import load_hf_config

        if not exists and is_hub_id(text):
            # a hub id: the built-in profile of that model, else one line on how to fetch its config.json
            return _with_overrides(get_model_profile(text), overrides)
        spec = _traced_model_of_config(path) or load_hf_config(path)
    elif text.strip()[:1].isdigit() or text.strip()[:1] == ".":
        spec = ModelSpec(name=text, total_parameters=parse_count(text))
    else:
        spec = get_model_profile(text)
    return _with_overrides(spec, overrides)


TRACED_SOURCE = "read by `memplan trace`"  # how cli/trace.py begins the source of a model profile it writes


def _traced_profile_named(text: str) -> bool:
    """`text` is a bare word (no '/', not a .json file name) that names, exactly, a model profile `memplan trace`
    wrote (its source says so)."""
    if "/" in text or os.sep in text or text.endswith(".json") or not re.fullmatch(r"[\w][\w.-]{0,99}", text):
        return False
    try:
        if _profile_file("models", text) is None:
            return False
        data, _ = _read("models", text)
    except MemplanError:
        return False
    return str(data.get("source") or "").startswith(TRACED_SOURCE)


def _traced_model_of_config(path: Path) -> ModelSpec | None:
    """For a config.json of a model_type no family file covers: the model profile `memplan trace` wrote from this
    very config (its `_hf_config` equal to the file's), so that the path the user traced is the path they
    estimate; None otherwise (the reader then says what to do)."""
    from memplan.families.hf import config_path_of, read_json
    from memplan.families.registry import find_family

    data = read_json(config_path_of(path))
    if find_family(str(data.get("model_type"))) is not None:
        return None
    for stem, (profile, _) in _raw("models").items():
        if profile.get("_hf_config") == data and str(profile.get("source") or "").startswith(TRACED_SOURCE):
            return get_model_profile(stem)
    return None


def _with_overrides(spec: ModelSpec, overrides: dict) -> ModelSpec:
    from memplan.families.profiles import with_overrides

    return with_overrides(spec, overrides)
