"""memplan as a user installs it: sdist -> wheel -> a fresh virtualenv, then the commands run from another folder.

The wheel is built from the sdist (as `python -m build` does), so both are checked: every JSON file under
profiles/ must be in the sdist and in the wheel (as memplan/profiles/...), found by listing the folder, not by a
list kept here.  The fresh venv holds nothing but the wheel and the dependencies its metadata asks for (pip
resolves them; from the local cache/index they take a few seconds).  Offline, the dependencies come from this
test run's own environment through a .pth line instead, and memplan itself must still load from the new venv.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LLAMA2_7B_PARAMS = 6_738_415_616  # profiles/models/llama-2-7b.json published_parameters (safetensors total)

pytestmark = pytest.mark.install


def _run(cmd: list[str], cwd: Path | str = "/", env: dict | None = None, check: bool = True
         ) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("MEMPLAN_PROFILES", "PYTHONPATH")}
    done = subprocess.run(cmd, cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def _profile_files() -> set[str]:
    return {p.relative_to(REPO / "profiles").as_posix() for p in (REPO / "profiles").rglob("*.json")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    # build_sdist through setuptools' PEP 517 hook in this environment (no isolated env to download), then the
    # wheel from that sdist in pip's own temporary folder (no stale build/ of the source tree can leak in)
    _run([sys.executable, "-c", f"import setuptools.build_meta as b; b.build_sdist({str(out)!r})"], cwd=REPO)
    sdist = next(out.glob("memplan-*.tar.gz"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(sdist), "-w",
          str(out)])
    return {"sdist": sdist, "wheel": next(out.glob("memplan-*.whl"))}


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    python = root / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--disable-pip-version-check"]
    if _run([*pip, str(dist["wheel"])], check=False).returncode != 0:  # offline: this run's dependencies
        _run([*pip, "--no-deps", str(dist["wheel"])])
        import click  # noqa: F401  (the dependencies live beside these)
        import pydantic
        import tabulate  # noqa: F401

        site = next((root / "lib").glob("python*/site-packages"))
        (site / "zz-test-dependencies.pth").write_text(str(Path(pydantic.__file__).parent.parent) + "\n")
    return root


def test_sdist_holds_every_profile(dist):
    with tarfile.open(dist["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = {f"profiles/{f}" for f in _profile_files()} - names
    assert not missing, f"not in the sdist: {sorted(missing)}"
    assert {"setup.py", "pyproject.toml", "README.md", "profiles/__init__.py"} <= names


def test_wheel_holds_every_profile_as_package_data(dist):
    names = set(zipfile.ZipFile(dist["wheel"]).namelist())
    missing = {f"memplan/profiles/{f}" for f in _profile_files()} - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert not any(n.startswith("profiles/") for n in names), "a top-level profiles/ would land in site-packages"


def test_estimate_models_gpus_run_from_another_folder(venv, tmp_path):
    memplan = str(venv / "bin" / "memplan")
    out = _run([memplan, "estimate", "llama-2-7b", "--gpu", "a100-80gb"], cwd=tmp_path).stdout
    assert out.startswith(f"llama-2-7b: {LLAMA2_7B_PARAMS:,} parameters")
    assert "a100-80gb" in out and "DOES NOT FIT" in out  # 16 B/param of model states alone exceed 80 GiB

    for kind in ("models", "gpus"):
        table = _run([memplan, kind], cwd=tmp_path).stdout
        listed = json.loads(_run([memplan, kind, "--json"], cwd=tmp_path).stdout)
        assert set(listed) == {Path(f).stem for f in _profile_files() if f.startswith(f"{kind}/")}
        assert all(name in table for name in listed)


def test_python_api_from_the_wheel(venv, tmp_path):
    script = (
        "import json, memplan\n"
        "from memplan import catalog\n"
        "r = memplan.estimate('llama-2-7b', gpu='a100-80gb')\n"
        "print(json.dumps({'file': memplan.__file__, 'profiles': str(catalog.profiles_dir()),\n"
        "                  'runs': str(catalog.runs_dir()), 'states': r.per_gpu.model_states,\n"
        "                  'peak': r.per_gpu.peak_allocated, 'fits': r.fits}))\n"
    )
    got = json.loads(_run([str(venv / "bin" / "python"), "-c", script], cwd=tmp_path).stdout)
    assert Path(got["file"]).is_relative_to(venv) and Path(got["profiles"]).is_relative_to(venv)
    assert Path(got["runs"]) == tmp_path / "memplan-runs"  # records never go into site-packages
    # bf16-mixed AdamW: 2 + 2 + 4 + 4 + 4 = 16 B/param (ZeRO paper, arXiv 1910.02054 sec. 3.1)
    assert got["states"] == 16 * LLAMA2_7B_PARAMS and got["fits"] is False
    cli = json.loads(_run([str(venv / "bin" / "memplan"), "estimate", "llama-2-7b", "--gpu", "a100-80gb",
                           "--json"], cwd=tmp_path).stdout)
    assert cli["per_gpu"]["peak_allocated"] == got["peak"] > got["states"]


def test_profiles_env_var_still_overrides(venv, tmp_path):
    (tmp_path / "gpus").mkdir()
    done = _run([str(venv / "bin" / "memplan"), "gpus"], cwd=tmp_path, env={"MEMPLAN_PROFILES": str(tmp_path)},
                check=False)
    assert done.returncode == 0 and "a100-80gb" not in done.stdout  # the empty folder, not the packaged one
    done = _run([str(venv / "bin" / "memplan"), "models"], cwd=tmp_path, env={"MEMPLAN_PROFILES": str(tmp_path)},
                check=False)
    assert done.returncode == 2 and done.stderr.startswith("memplan: error: profile folder")
    assert "Traceback" not in done.stderr


def test_editable_install_reads_the_source_folder():
    """`pip install -e .` maps memplan.profiles onto profiles/ itself: a JSON file added there is seen at once."""
    import memplan
    from memplan import catalog

    if not Path(memplan.__file__).is_relative_to(REPO):
        pytest.skip("memplan here is not this checkout's editable install")
    assert Path(str(catalog.profiles_dir())).resolve() == (REPO / "profiles").resolve()
