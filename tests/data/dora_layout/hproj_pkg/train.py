"""Training script of the Dora-layout fixture: pushes a loss per epoch, and ends with a line
in its log that the grids' Explorer reads back through ``sheep.log``."""

import gridman


@gridman.hydra_main(config_path="conf", config_name="config", version_base="1.1")
def main(cfg):
    xp = gridman.get_xp()
    loss = None
    for epoch in range(cfg.train.epochs):
        loss = 1 / (1 + epoch) + cfg.optim.lr
        xp.link.push_metrics({"train": {"loss": loss, "epoch": epoch}})
    print(f"FINAL depth={cfg.model.scale.depth} dset={cfg.dset.name} loss={loss}", flush=True)


if __name__ == "__main__":
    main()
