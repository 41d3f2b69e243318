#!/usr/bin/env bash
# One prepared GPU benchmark run: bench.py on cuda, its table written into benchmarks/README.md.
#
#   bash benchmarks/gpu.sh             # ~4 min on an H100 / H200; needs no network
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

PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
TABLE=$(mktemp --suffix=.md)
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
