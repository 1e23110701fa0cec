"""Training script of the Hydra fixture project: records where and with what it ran."""

import json
import os
from pathlib import Path

import gridman


@gridman.hydra_main(config_path="conf", config_name="config", version_base="1.1")
def main(cfg):
    xp = gridman.get_xp()
    # A relative path: with version_base 1.1 it lands in the XP folder (Hydra's chdir).
    Path("ran.json").write_text(json.dumps({
        "cwd": os.getcwd(),
        "folder": str(xp.folder),
        "sig": xp.sig,
        "lr": cfg.optim.lr,
        "dset": cfg.dset.name,
        "depth": cfg.model.scale.depth,
        "path": cfg.data.path,
    }))
    for epoch in range(cfg.train.epochs):
        xp.link.push_metrics({"train": {"loss": cfg.optim.lr / (1 + epoch), "epoch": epoch}})


if __name__ == "__main__":
    main()
