"""Asynchronous random search with gridman's Evaluator: keep every worker busy, keep every result.

The objective is a cheap stand-in for training a model: a noisy, shifted Branin function of a
"learning rate" (log scale) and a "momentum", negated so that larger is better, which sleeps a
little to look like work. The loop submits one configuration per worker, then, each time
``gather("BATCH", size=1)`` returns finished jobs, submits as many new ones: no worker waits
for the slowest job of a batch. Results are XPs under ``--log-dir``; run the script twice and
the second run evaluates nothing (the same seed draws the same configurations).

    .venv/bin/python examples/search.py                    # 2 worker processes, 24 evaluations
    .venv/bin/python examples/search.py --method thread --workers 4 --budget 40
    mpiexec -n 3 .venv/bin/python examples/search.py --method mpi
    GRIDMAN_DIR=outputs/search gridman info --sig SIG      # one evaluation, as any XP
"""

from __future__ import annotations

import argparse
import math
import random
import time
from typing import Union

from gridman.evaluator import Evaluator, RunningJob, profile
from gridman.evaluator.callbacks import ProgressBar


@profile
def run(job: RunningJob) -> Union[dict, str]:
    """The objective of one configuration (larger is better)."""
    x = math.log10(job["lr"]) * 2.5 + 5.0  # lr in [1e-4, 1] -> x in [-5, 5]
    y = job["momentum"] * 15.0  # momentum in [0, 1] -> y in [0, 15]
    if job["momentum"] > 0.98:
        return "F_diverged"  # a failure, with its reason
    branin = (y - 5.1 / (4 * math.pi**2) * x**2 + 5 / math.pi * x - 6) ** 2
    branin += 10 * (1 - 1 / (8 * math.pi)) * math.cos(x) + 10
    noise = random.Random(job.id).gauss(0, 0.1)
    time.sleep(0.02 + 0.03 * job["momentum"])  # "training" takes longer with more momentum
    return {"objective": -branin + noise, "metadata": {"x": x, "y": y}}


def sample(rng: random.Random) -> dict:
    return {"lr": round(10 ** rng.uniform(-4, 0), 6), "momentum": round(rng.uniform(0, 1), 3)}


def search(evaluator: Evaluator, budget: int, seed: int) -> list:
    """Random search that refills a worker as soon as one job finishes."""
    rng = random.Random(seed)
    submitted = min(budget, evaluator.num_workers)
    evaluator.submit([sample(rng) for _ in range(submitted)])
    finished: list = []
    while len(finished) < submitted:
        batch = evaluator.gather("BATCH", size=1)
        finished.extend(batch)
        refill = min(len(batch), budget - submitted)
        if refill > 0:
            evaluator.submit([sample(rng) for _ in range(refill)])
            submitted += refill
    return finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="process", help="serial, thread, process or mpi")
    parser.add_argument("--workers", type=int, default=None, help="default: 2 (mpi: ranks - 1)")
    parser.add_argument("--budget", type=int, default=24, help="evaluations in all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="outputs/search", help="'' for no persistence")
    args = parser.parse_args()
    workers = args.workers or (None if args.method == "mpi" else 2)
    options = {"num_workers": workers, "callbacks": [ProgressBar()]}
    if args.log_dir:
        options["log_dir"] = args.log_dir
    with Evaluator.create(run, method=args.method, method_kwargs=options) as evaluator:
        start = time.perf_counter()
        jobs = search(evaluator, args.budget, args.seed)
        seconds = time.perf_counter() - start
        if args.log_dir:
            csv = evaluator.dump_evals()
    ok = [j for j in jobs if not j.failed]
    best = max(ok, key=lambda j: j.objective)
    cached = sum(j.cached for j in jobs)
    print(f"{len(jobs)} evaluations ({cached} from the cache, {len(jobs) - len(ok)} failed) "
          f"in {seconds:.2f} s with {args.method} x {evaluator.num_workers}")  # fmt: skip
    params = " ".join(f"{k}={v}" for k, v in best.parameters.items())
    print(f"best: {params}  objective={best.objective:.4f}  (job {best.id}, sig {best.sig})")
    if args.log_dir:
        print(f"all evaluations: {csv}")


if __name__ == "__main__":
    main()
