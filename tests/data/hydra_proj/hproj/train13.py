"""The same project with Hydra 1.3 defaults (version_base=None): no chdir into the XP folder."""

import json
import os

import gridman


@gridman.hydra_main(config_path="conf", config_name="config")
def main(cfg):
    xp = gridman.get_xp()
    (xp.folder / "ran.json").write_text(json.dumps({"cwd": os.getcwd(), "sig": xp.sig}))
