#!/usr/bin/env bash
# Makes a stock venv with torch, torchvision and pillow from PyPI (CPU is enough), outside the
# checkout so that a second run does not download 5 GB again, and prints its path.
#
#   examples/pytorch/setup-venv.sh                   # ~/.cache/pfs/torch-venv (or $PFS_TORCH_VENV)
#   PFS_TORCH_VENV=/opt/torch-venv examples/pytorch/setup-venv.sh
#
# A venv that already imports all three is kept as it is (no pip run at all). The venv is a
# stock one (`python3 -m venv`, bin/python3 a symlink to the base interpreter), as Gramine's
# tutorial users make it; `pfs run` must handle that.
set -euo pipefail
venv=${PFS_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pfs/torch-venv}
if [ -x "$venv/bin/python3" ] && "$venv/bin/python3" -c 'import torch, torchvision, PIL' >/dev/null 2>&1; then
  echo "$venv"
  exit 0
fi
base=${PYTHON:-python3}
mkdir -p "$(dirname "$venv")"
echo "setup-venv.sh: installing torch, torchvision and pillow into $venv (about 5 GB)" >&2
"$base" -m venv "$venv"
"$venv/bin/python3" -m pip install --quiet --disable-pip-version-check torch torchvision pillow >&2
"$venv/bin/python3" -c 'import torch, torchvision, PIL' >&2
echo "$venv"
