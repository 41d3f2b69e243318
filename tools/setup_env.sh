#!/usr/bin/env bash
# Create or reuse the virtual environment that every README command runs in, and install
# everything resnext_det needs into it. Idempotent: a second run with unchanged
# requirements only checks a stamp file and returns.
#
#   VENV=path     where the environment lives (default: .venv in the repository root)
#   PYTHON=path   interpreter used to create it (default: python3)
#
# detectron2 is not on PyPI under its own name. If the environment already imports a
# detectron2 (for example one you built from source), it is kept. Otherwise we install
# PyPI's `sal-detectron2==0.7.2`: detectron2's Python code as of 2024-08, in a wheel tagged
# cp310-none-any whose compiled `_C` only loads on Python 3.10. pip refuses the tag, so the
# wheel is downloaded for Python 3.10 and unpacked with the `installer` package, which
# ignores tags. Without `_C`, Faster R-CNN / RetinaNet training and inference work
# (detectron2 calls torchvision's roi_align and nms); deformable conv, rotated boxes and
# the C++ COCOeval ("fast eval") do not.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"
d2_wheel_spec="sal-detectron2==0.7.2"

log() { printf '[setup_env] %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"

# The stamp records what was installed: requirements, setup.py and this script.
stamp="$venv/.resnext_det_installed"
want="$(cat "$root/requirements.txt" "$root/requirements-test.txt" "$root/setup.py" \
  "$root/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$py" -c "import detectron2, resnext_det" 2>/dev/null; then
  exit 0
fi

log "installing requirements into $venv (torch is a large download on a fresh machine)"
"$py" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$py" -m pip install --quiet --disable-pip-version-check -r "$root/requirements.txt" \
  -r "$root/requirements-test.txt" installer wheel

if "$py" -c "import detectron2" 2>/dev/null; then
  log "using the detectron2 already installed: $("$py" -c 'import detectron2; print(detectron2.__file__)')"
else
  log "installing detectron2 from PyPI's $d2_wheel_spec (Python code only; see this script's header)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps \
    --python-version 3.10 --only-binary=:all: -d "$tmp" "$d2_wheel_spec"
  "$py" -m installer "$tmp"/*.whl
  "$py" -c "import detectron2, detectron2.modeling" || {
    log "detectron2 was installed but does not import; see the error above"; exit 1; }
fi

"$py" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
echo "$want" > "$stamp"
log "ready: $py"
