#!/usr/bin/env bash
# The wheels the GPU machine lacks (it has torch, Lightning, numpy, pandas, scipy, matplotlib,
# PyYAML, tqdm; not MONAI, nibabel, pydantic, Optuna or colorlog), for its Python 3.12 on x86-64,
# into .whl/ (ignored by git, carried by the device call). The versions are uv.lock's, so the GPU runs the same code.
set -euo pipefail
cd "$(dirname "$0")/../.."
version() { awk -v name="$1" '$0 == "name = \"" name "\"" {getline; gsub(/[^0-9.]/, ""); print; exit}' uv.lock; }
mkdir -p .whl
for name in monai nibabel pydantic pydantic-core annotated-types typing-inspection optuna colorlog; do
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$name==$(version "$name")"
done
du -sh .whl
