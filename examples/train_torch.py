"""GPU variant of the example: a small torch MLP on a synthetic task (needs `pip install torch`).

Uses the GPU that gridman assigned through CUDA_VISIBLE_DEVICES (``launcher.slurm_(gpus=1)``),
else the CPU. Used by grids/gpu.py to measure GPU packing (``local.xps_per_gpu``):

    gridman grid gpu --main examples/train_torch.py
"""

import argparse
import time

import gridman

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--steps", type=int, default=3000)
parser.add_argument("--width", type=int, default=512)
parser.add_argument("--batch_size", type=int, default=256)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--log_every", type=int, default=500)


@gridman.argparse_main(parser=parser, dir="outputs", exclude=["log_every"])
def main():
    import torch  # imported here: gridman never needs torch to plan or show a grid

    xp = gridman.get_xp()
    cfg = xp.cfg
    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dim = 64
    teacher = torch.nn.Linear(dim, 1).to(device)
    model = torch.nn.Sequential(
        torch.nn.Linear(dim, cfg.width), torch.nn.ReLU(),
        torch.nn.Linear(cfg.width, cfg.width), torch.nn.ReLU(),
        torch.nn.Linear(cfg.width, 1),
    ).to(device)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start = time.time()
    for step in range(1, cfg.steps + 1):
        x = torch.randn(cfg.batch_size, dim, device=device)
        with torch.no_grad():
            y = torch.sin(teacher(x))
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            xp.link.push_metrics(
                {"train": {"loss": loss.item(), "step": step},
                 "time": {"loop_s": time.time() - start, "device": device}}
            )  # fmt: skip


if __name__ == "__main__":
    main()
