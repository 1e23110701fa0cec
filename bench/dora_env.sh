#!/usr/bin/env bash
# Creates the Dora venv the grid benchmarks compare gridman with (see
# /work/shared/notes/dora-anchor.md §10): torch 2.13.0 (the local CPU wheel), then dora-search.
#
#     bench/dora_env.sh [VENV]      VENV: $DORA_VENV, else /tmp/dora-venv
#
# Idempotent: exits at once when VENV already imports dora and torch. Refuses (exit 3) to
# install a torch that pip would download instead of taking the local CPU wheel (a CUDA torch is
# several GB). Interpreter: $DORA_PYTHON, else python3 (Dora 0.1.13 needs Python >= 3.10).
set -euo pipefail

VENV="${1:-${DORA_VENV:-/tmp/dora-venv}}"
PYTHON="${DORA_PYTHON:-python3}"

if [ -x "$VENV/bin/dora" ] && "$VENV/bin/python" -c "import dora, torch" 2>/dev/null; then
    echo "Dora: ready in $VENV"
    exit 0
fi

echo "Dora: creating $VENV with $("$PYTHON" --version 2>&1)"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
pip_quiet() {  # pip, without the warnings about this machine's empty extra index folders
    "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# Where would torch come from? Only a local file (file://) is acceptable, and no CUDA extras.
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
"${PIP[@]}" install --quiet --dry-run --report "$report" "torch==2.13.0" 2>/dev/null
if ! "$VENV/bin/python" - "$report" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))["install"]
bad = [
    f"{i['metadata']['name']} {i['metadata']['version']} from {i['download_info']['url']}"
    for i in items
    if i["metadata"]["name"].lower().startswith(("torch", "nvidia", "triton"))
    and not i["download_info"]["url"].startswith("file://")
]
if bad:
    print("Dora: not installing, pip would download:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
PY
then
    exit 3
fi

pip_quiet install --quiet "torch==2.13.0"
pip_quiet install --quiet dora-search
"$VENV/bin/python" - "$VENV" <<'PY'
import sys
from importlib.metadata import version

import dora  # noqa: F401  (fails loudly if the install is broken)
import torch

print(f"Dora: ready in {sys.argv[1]} (dora-search {version('dora-search')}, torch {torch.__version__})")
PY
