#!/usr/bin/env bash
# Run here, where PyPI is reachable, before a GPU session: the packages bench.py needs that
# the lent GPU machine lacks, as wheels for its Python, into .whl/ (git-ignored, ~10 MB),
# and the digits demo set for its AP contract (.whl/datasets/digits).
#
#   bash benchmarks/gpu_wheels.sh            # wheels for CPython 3.12 (the GPU machine's)
#   PYVER=3.11 bash benchmarks/gpu_wheels.sh # for another Python (a dry run on this one)
#
# Then on the GPU machine: `bash benchmarks/gpu.sh` with .whl carried along. That machine
# has torch, torchvision, numpy, matplotlib, tabulate, cloudpickle, portalocker, pyyaml and
# tqdm but no network; gpu.sh unpacks these wheels into a folder on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."

py=${PYTHON:-.venv/bin/python}
pyver=${PYVER:-3.12}
dest=.whl
mkdir -p "$dest" .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
get() { "$py" -m pip download --quiet --disable-pip-version-check --no-deps -d "$dest" "$@"; }

# compiled: CPython $pyver on x86-64 Linux (the versions of requirements.txt)
get --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    pycocotools==2.0.8 faster-coco-eval==1.8.0 orjson==3.13.0 protobuf==7.36.2
# pure Python, published as wheels: detectron2's and fvcore's needs; setuptools before 81
# for pkg_resources, which detectron2's model_zoo imports and setuptools 81 removes;
# tensorboard (with protobuf above and absl-py) for the TensorBoard writer of detectron2's
# default_writers, which tools/train_net.py's training uses
get --only-binary=:all: --python-version "$pyver" \
    iopath==0.1.9 yacs==0.1.8 termcolor==3.3.0 omegaconf==2.3.1 hydra-core==1.3.8 \
    setuptools==80.9.0 tensorboard==2.21.0 absl-py==2.5.1
# pure Python, published as source only: built into wheels here
"$py" -m pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w "$dest" \
    fvcore==0.1.5.post20221221 antlr4-python3-runtime==4.9.3
# detectron2's Python code: PyPI's sal-detectron2 (its wheel is tagged cp310; gpu.sh unpacks
# it without the tag check, and its compiled _C, built for 3.10, is not used)
get --only-binary=:all: --python-version 3.10 sal-detectron2==0.7.2

# the digits demo set for gpu.sh's AP contract (its source is scikit-learn's, which the GPU
# machine lacks): the demo's detection set, 2000 + 300 images of 128x128 (~5 s)
"$py" tools/build_digits_dataset.py --output "$dest/datasets/digits" --cls-copies 0 \
    --progress-every 0

ls "$dest"
du -sh "$dest"
