#!/usr/bin/env bash
# One prepared GPU benchmark run: bench.py on cuda, its table written into benchmarks/README.md.
#
#   bash benchmarks/gpu_wheels.sh      # first, here (PyPI): the packages the GPU machine lacks
#   bash benchmarks/gpu.sh             # there, with .whl/ carried: under 8 min on an H100 / H200
#   bash benchmarks/gpu.sh --dry-run   # the same steps on the CPU, --smoke, README untouched
#
# First the AP contract of MODEL.RESNEXT.INFERENCE_DTYPE on the GPU: the digits demo model
# trained there (the set built by gpu_wheels.sh into .whl/datasets: the GPU machine lacks
# scikit-learn), then benchmarks/ap_contract.py: box AP of float16 and bfloat16 against
# float32. Then bench.py in the time left: classifier (batch 1 and 8) and Faster R-CNN
# X50_32x4d inference (C4, FPN) in float32 (TF32 off), channels_last, and fp16 / bf16
# autocast, against torchvision and detectron2's built-in, each also as tuned
# (channels_last); a Faster R-CNN FPN training iteration (batch 2, 800x1333) in float32 and
# with fp16 / bf16 autocast. Outputs are checked before any time (bench.py), whose table is
# written after each benchmark, so that a run cut short keeps what it measured. Both tables
# replace the text between the gpu-table markers of benchmarks/README.md; with $OUT set
# (the device tool's result folder), they and the README are also copied there.
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=false
[ "${1:-}" = "--dry-run" ] && dry_run=true
# the GPU machine's python3 holds its torch; ours is .venv's where there is one
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
TABLE=$(mktemp --suffix=.md)

# detectron2 and the evaluation packages, from .whl/ where the interpreter lacks them:
# unpacked (a wheel is a zip; detectron2's is tagged cp310, which pip would refuse)
needs="import detectron2.model_zoo, fvcore, iopath, omegaconf, pycocotools, faster_coco_eval, orjson, torch.utils.tensorboard"
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

# The AP contract on $1 (cuda; cpu for the dry run), the demo trained with overrides $2...
# Its table goes to $AP_TABLE; a step that fails or runs out of time is said there.
ap_contract() {
    local device=$1; shift
    local out=output/gpu_ap
    mkdir -p output
    if [ ! -f .whl/datasets/digits/manifest.json ]; then
        echo "AP contract not measured: no digits set in .whl/datasets (run gpu_wheels.sh)" > "$AP_TABLE"
        return
    fi
    export DETECTRON2_DATASETS=.whl/datasets
    if ! timeout "${AP_TRAIN_S:-200}" "$PYTHON" tools/train_net.py \
            --config-file configs/demo/faster_rcnn_X50_digits.yaml \
            MODEL.DEVICE "$device" OUTPUT_DIR "$out" TEST.EVAL_PERIOD 0 "$@" > "$out.log" 2>&1; then
        tail -n 20 "$out.log"
        echo "AP contract not measured: the demo's training failed or ran past ${AP_TRAIN_S:-200} s" > "$AP_TABLE"
        return
    fi
    { echo "AP contract (\`benchmarks/ap_contract.py\`, the digits demo trained on $device" \
           "with \`tools/train_net.py\`${*:+, $*}):"; echo '```'
      timeout "${AP_EVAL_S:-120}" "$PYTHON" benchmarks/ap_contract.py \
          --config-file configs/demo/faster_rcnn_X50_digits.yaml --output "$out/ap" \
          ${AP_MAX_IMAGES:+--max-images $AP_MAX_IMAGES} --markdown "$out/ap.md" \
          MODEL.DEVICE "$device" MODEL.WEIGHTS "$out/model_final.pth" > "$out/ap.log" 2>&1 \
          || echo "ap_contract.py ended with status $? (1: a type outside the contract)"
      cat "$out/ap.md" 2>/dev/null || tail -n 20 "$out/ap.log"
      grep -o 'Overall training speed.*' "$out.log" || true
      echo '```'; } > "$AP_TABLE"
}
AP_TABLE=$(mktemp --suffix=.md)

if $dry_run; then
    AP_MAX_IMAGES=8 ap_contract cpu SOLVER.MAX_ITER 2
    cat "$AP_TABLE"
    "$PYTHON" benchmarks/bench.py --device cpu --smoke --only classifier detector train coco \
        --keep-going --markdown "$TABLE"
    cat "$TABLE"
    exit 0
fi

"$PYTHON" -c "import torch, detectron2, torchvision; assert torch.cuda.is_available(), 'no CUDA device'"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# Under 8 minutes in all: the AP contract's 1500 iterations and 3 evaluations of 300 images
# (5.5 min at most), then bench.py in what is left of 7.5 minutes (at least 2).
start=$SECONDS
ap_contract cuda
cat "$AP_TABLE"
timeout $(( (450 - (SECONDS - start)) > 120 ? 450 - (SECONDS - start) : 120 )) \
    "$PYTHON" benchmarks/bench.py --device cuda --amp --only classifier detector train \
    --threads "$(nproc)" --warmup 5 --repeats 30 --det-repeats 10 --amp-repeats 10 \
    --keep-going --markdown "$TABLE" || echo "bench.py ended with status $? (124: out of time)"

"$PYTHON" - "$TABLE" "$AP_TABLE" <<'EOF'
import datetime
import re
import sys

bench = open(sys.argv[1]).read().strip() or "bench.py wrote no table"
table = f"{bench}\n\n{open(sys.argv[2]).read().strip()}"
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
    cp "$AP_TABLE" "$OUT"/gpu_ap_table.md
    cp benchmarks/README.md "$OUT"/
fi
