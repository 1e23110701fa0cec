"""A tiny main written for gridman 0.1.0 (the old layout's on-disk formats)."""

import argparse

import gridman

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=3)


@gridman.argparse_main(parser=parser, dir="outputs")
def main():
    xp = gridman.get_xp()
    start = len(xp.link.history)
    for epoch in range(start, xp.cfg.epochs):
        xp.link.push_metrics({"train": {"loss": 1.0 / (epoch + 1)}, "valid": {"acc": xp.cfg.lr * epoch}})


if __name__ == "__main__":
    main()
