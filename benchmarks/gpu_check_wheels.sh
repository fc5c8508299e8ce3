#!/usr/bin/env bash
# The small wheels benchmarks/gpu_check.py needs on a GPU machine image that has only torch, numpy and OpenCV
# (Python 3.12 there): put them in a folder inside the working tree and pass it as --wheels.
#   bash benchmarks/gpu_check_wheels.sh gpu_wheels
#   python benchmarks/gpu_check.py --wheels gpu_wheels --minutes 6
set -euo pipefail
out="${1:-gpu_wheels}"
mkdir -p "$out"
# Pure-Python packages: any Python reads these wheels straight from sys.path.
pip wheel --no-deps -q -w "$out" "hydra-core==1.3.2" "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" tqdm
# PyYAML: its pure-Python part works from the wheel (the C speedup is skipped).
pip download --no-deps -q -d "$out" --only-binary :all: --python-version 3.12 \
    --platform manylinux2014_x86_64 PyYAML
ls -la "$out"
