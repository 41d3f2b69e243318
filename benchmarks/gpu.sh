#!/usr/bin/env bash
# One prepared GPU benchmark run: bench.py on cuda, its table written into benchmarks/README.md.
#
#   bash benchmarks/gpu_wheels.sh      # first, here (PyPI): the packages the GPU machine lacks
#   bash benchmarks/gpu.sh             # there, with .whl/ carried: ~4 min on an H100 / H200
#   bash benchmarks/gpu.sh --dry-run   # the same steps on the CPU, --smoke, README untouched
#
# Rows: classifier (batch 1 and 8) and Faster R-CNN X50_32x4d inference (C4, FPN) in float32
# (TF32 off), channels_last, and fp16 / bf16 autocast, against torchvision and detectron2's
# built-in, each also as tuned (channels_last); a Faster R-CNN FPN training iteration
# (batch 2, 800x1333) in float32 and with fp16 / bf16 autocast. Outputs are checked before
# any time (bench.py). The table replaces the text between the gpu-table markers of
# benchmarks/README.md; with $OUT set (the device tool's result folder), the table and the
# README are also copied there.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=false
[ "${1:-}" = "--dry-run" ] && dry_run=true
# the GPU machine's python3 holds its torch; ours is .venv's where there is one
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
TABLE=$(mktemp --suffix=.md)

# detectron2 and the evaluation packages, from .whl/ where the interpreter lacks them:
# unpacked (a wheel is a zip; detectron2's is tagged cp310, which pip would refuse)
needs="import detectron2.model_zoo, fvcore, iopath, omegaconf, pycocotools, faster_coco_eval, orjson"
if ! "$PYTHON" -c "$needs" 2>/dev/null; then
    if [ ! -d .whl ]; then
        echo "error: $PYTHON lacks detectron2 or its needs, and there is no .whl/ to install" \
             "them from: run benchmarks/gpu_wheels.sh where PyPI is reachable, and carry .whl" >&2
        exit 2
    fi
    site=$(mktemp -d)
    for wheel in .whl/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$site"; done
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    "$PYTHON" -c "$needs"
fi

if $dry_run; then
    "$PYTHON" benchmarks/bench.py --device cpu --smoke --only classifier detector train coco \
        --keep-going --markdown "$TABLE"
    cat "$TABLE"
    exit 0
fi

"$PYTHON" -c "import torch, detectron2, torchvision; assert torch.cuda.is_available(), 'no CUDA device'"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# 7 minutes at most, so that the script stays under 8 with the start-up.
timeout 420 "$PYTHON" benchmarks/bench.py --device cuda --amp --only classifier detector train \
    --threads "$(nproc)" --warmup 5 --repeats 30 --det-repeats 10 --amp-repeats 10 \
    --keep-going --markdown "$TABLE"

"$PYTHON" - "$TABLE" <<'EOF'
import datetime
import re
import sys

table = open(sys.argv[1]).read().strip()
readme_path = "benchmarks/README.md"
readme = open(readme_path).read()
start, end = "<!-- gpu-table:start -->", "<!-- gpu-table:end -->"
block = (f"{start}\n{datetime.date.today()}, `bash benchmarks/gpu.sh`: {table}\n{end}")
readme, count = re.subn(re.escape(start) + ".*?" + re.escape(end), lambda m: block, readme, flags=re.S)
assert count == 1, "benchmarks/README.md lost its gpu-table markers"
open(readme_path, "w").write(readme)
print(f"{readme_path}: GPU table written")
EOF

if [ -n "${OUT:-}" ]; then
    cp "$TABLE" "$OUT"/gpu_table.md
    cp benchmarks/README.md "$OUT"/
fi
