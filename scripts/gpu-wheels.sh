#!/usr/bin/env bash
# Download, here (with network), the wheels scripts/gpu-check.sh installs on the lent GPU machine, which has
# Python 3.12, torch, click, tabulate, pyyaml, nvidia-ml-py -- but no pydantic and no network
# (/work/.library/device/KINDS.md).  Exactly memplan's pydantic closure, cp312 manylinux x86_64, no dependencies
# resolved by pip (--no-deps: each one is named below).
#
# Versions: within pyproject.toml's `pydantic>=2.5`; pydantic 2.14.4 pins pydantic-core==2.50.5 and needs
# annotated-types>=0.6.0, typing-inspection>=0.4.4, typing-extensions>=4.16.0 (the wheels' own METADATA
# Requires-Dist).  Override with MEMPLAN_WHEELS="name==ver ...".
#
# Usage: scripts/gpu-wheels.sh [DIR]   (default .whl/, git-ignored; about 2.5 MiB)
# Then send the tree with `.whl` carried (docs/gpu-check.md).
set -u
DIR="${1:-.whl}"
WHEELS=${MEMPLAN_WHEELS:-"pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0"}
PY="${PYTHON:-python3}"
mkdir -p "$DIR"
# one version of each: two of the same name stop `pip install --no-index` on the machine
rm -f "$DIR"/pydantic-*.whl "$DIR"/pydantic_core-*.whl "$DIR"/annotated_types-*.whl \
      "$DIR"/typing_inspection-*.whl "$DIR"/typing_extensions-*.whl
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$DIR" $WHEELS || { echo "gpu-wheels.sh: pip download failed (network? versions?)" >&2; exit 1; }
ls -l "$DIR"/*.whl
n=$(ls "$DIR"/*.whl | wc -l)
[ "$n" -eq 5 ] || { echo "gpu-wheels.sh: expected 5 wheels in $DIR, found $n" >&2; exit 1; }
