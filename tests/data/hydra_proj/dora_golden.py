"""Golden signatures of this fixture, computed by Dora itself (not by gridman).

Run ONCE in a Dora 0.1.13 venv with hydra-core 1.3.8 and omegaconf 2.3.1:

    bench/dora_env.sh && /tmp/dora-venv/bin/pip install hydra-core==1.3.8 omegaconf==2.3.1
    cd tests/data/hydra_proj && /tmp/dora-venv/bin/python dora_golden.py

For each launcher call of cases.json (a list of launcher arguments, as a grid passes them), it
prints Dora's argv, delta and signature as JSON; tests/test_hydra_main.py holds the output.
"""

import json
import sys
from pathlib import Path

from dora import hydra_main

HERE = Path(__file__).resolve().parent


@hydra_main(config_path="hproj/conf", config_name="config", version_base="1.1")
def main(cfg):
    raise RuntimeError("only the signatures are computed here")


def dora_argv(parts):
    # What Dora's Launcher does with its arguments: each one through value_to_argv.
    argv = []
    for part in parts:
        argv += main.value_to_argv(part)
    return argv


out = []
for parts in json.loads((HERE / "cases.json").read_text()):
    xp = main.get_xp(dora_argv(parts))
    out.append({"argv": list(xp.argv), "delta": [list(p) for p in xp.delta], "sig": xp.sig})
json.dump(out, sys.stdout, indent=1)
print()
