"""Only what pyproject.toml cannot say: the top-level profiles/ folder installs as the data package
memplan.profiles (read with importlib.resources), next to every package found under memplan/.

pyproject's [tool.setuptools.packages] can either find packages or list them, not rename a folder; a list would
have to name every memplan subpackage by hand.  Every *.json under profiles/ ships, in any subfolder, without
being listed (package-data in pyproject.toml)."""
from setuptools import find_namespace_packages, find_packages, setup

# The data subfolders (gpus/, models/, ...) are listed as packages too: setuptools warns about (and will one
# day drop) data folders whose names look importable but are not in `packages`.
DATA = ["memplan.profiles", *(f"memplan.profiles.{sub}" for sub in find_namespace_packages(where="profiles"))]

setup(
    packages=[*find_packages(include=["memplan", "memplan.*"]), *DATA],
    package_dir={"memplan.profiles": "profiles"},
)
