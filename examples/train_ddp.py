"""A small distributed (DDP) main: every rank trains the same tiny model on its own data.

Run it as several ranks with gridman: ``gridman run --ws 2 -- --steps 5`` (two ranks on CPUs),
``gridman run -d`` (one rank per visible GPU), or from a grid on the local pool or Slurm with
``launcher(gpus=2)``. ``gridman.distrib.init()`` starts torch.distributed (gloo on CPUs, nccl
on GPUs) from the variables gridman gives each rank; only rank 0 writes the history (the other
ranks' pushes stay in memory), so it holds each step once.

Each rank also writes ``ranks/<rank>.json`` in the XP's folder (what it saw: its rank, world
size, local rank, GPUs, pid and the all_reduce's result); the tests read it. ``--no-torch``
skips torch altogether (the rank bookkeeping alone), ``--hold FILE`` waits while FILE exists,
``--sleep-once S`` sleeps S seconds on the first attempt only (a requeued XP resumes quickly),
``--fail-rank R`` makes rank R exit with status 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import gridman
from gridman import distrib

parser = argparse.ArgumentParser(description="gridman DDP example")
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--no-torch", action="store_true")
parser.add_argument("--hold", default="")
parser.add_argument("--sleep-once", type=float, default=0.0)
parser.add_argument("--fail-rank", type=int, default=-1)


def _train(cfg: Any, xp: Any, seen: dict[str, Any]) -> None:
    """DDP on a linear model: the gradients are averaged over the ranks at every step."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    started = distrib.init()  # False for a single process: DDP then runs without a group
    world = distrib.world_size()
    total = torch.tensor([float(distrib.rank() + 1)])
    if started:
        dist.all_reduce(total)  # every rank adds its rank + 1: world * (world + 1) / 2
    seen["allreduce"] = total.item()
    device = torch.device("cuda", distrib.local_rank()) if torch.cuda.is_available() else None
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1).to(device)
    wrapped = DistributedDataParallel(model) if started else model
    optim = torch.optim.SGD(wrapped.parameters(), lr=cfg.lr)
    data = torch.Generator().manual_seed(distrib.rank())
    begin = time.perf_counter()
    for step in range(len(xp.link.history), cfg.steps):
        x = torch.randn(cfg.batch, 8, generator=data).to(device)
        loss = ((wrapped(x) - x.sum(dim=1, keepdim=True)) ** 2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        xp.link.push_metrics({"step": step, "loss": loss.item(), "world": world,
                              "allreduce": seen["allreduce"]})  # fmt: skip
    seen["seconds"] = time.perf_counter() - begin
    seen["weight_sum"] = float(model.weight.sum().item())  # equal on every rank under DDP
    if started:
        dist.destroy_process_group()


@gridman.argparse_main(parser=parser, dir="outputs", exclude=["hold", "sleep_once", "fail_rank"])
def main() -> None:
    xp = gridman.get_xp()
    cfg = xp.cfg
    rank = distrib.rank()
    seen: dict[str, Any] = {
        "rank": rank, "world": distrib.world_size(), "local_rank": distrib.local_rank(),
        "local_world": distrib.local_world_size(), "pid": os.getpid(),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "master": f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}",
    }  # fmt: skip
    print(f"rank {rank}/{seen['world']} local {seen['local_rank']} starts", flush=True)
    if cfg.no_torch:
        for step in range(len(xp.link.history), cfg.steps):
            xp.link.push_metrics({"step": step, "world": seen["world"]})
    else:
        _train(cfg, xp, seen)
    ranks = xp.folder / "ranks"
    ranks.mkdir(exist_ok=True)
    (ranks / f"{rank}.json").write_text(json.dumps(seen))
    if rank == cfg.fail_rank:
        print(f"rank {rank} fails", flush=True)
        sys.exit(3)
    if cfg.hold:
        deadline = time.monotonic() + 60
        while os.path.exists(cfg.hold) and time.monotonic() < deadline:
            time.sleep(0.05)
    marker = xp.folder / f"slept-once.{rank}"
    if cfg.sleep_once and not marker.exists():
        marker.touch()
        print("sleeping once", flush=True)
        time.sleep(cfg.sleep_once)
    print(f"rank {rank} done", flush=True)


if __name__ == "__main__":
    main()
