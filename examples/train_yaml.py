"""Example YAML-configured training script (same task as train.py, config in conf/config.yaml).

python examples/train_yaml.py lr=0.5 model.hidden=8
gridman run --main examples/train_yaml.py -- lr=0.5 model.hidden=8
"""

import math
import random

import gridman

try:  # run as a script or imported by gridman from any folder
    from train import evaluate, make_data, sigmoid
except ImportError:  # pragma: no cover
    from examples.train import evaluate, make_data, sigmoid


def forward(params, x):
    if not params["hidden"]:
        return sigmoid(sum(wi * xi for wi, xi in zip(params["w"], x)) + params["b"])
    h = [math.tanh(sum(a * xi for a, xi in zip(row, x))) for row in params["W1"]]
    return sigmoid(sum(v * hi for v, hi in zip(params["w"], h)) + params["b"])


@gridman.yaml_main(config="conf/config.yaml", dir="outputs", exclude=["logging.*"])
def main():
    xp = gridman.get_xp()
    cfg = xp.cfg
    rng = random.Random(cfg.seed)
    train = make_data(cfg.data.n_train, cfg.data.dim, cfg.data.noise, rng)
    valid = make_data(cfg.data.n_valid, cfg.data.dim, cfg.data.noise, rng)
    hidden, dim, s = cfg.model.hidden, cfg.data.dim, cfg.model.init_scale
    width = hidden or dim
    params = {
        "hidden": hidden,
        "W1": [[rng.gauss(0, s) for _ in range(dim)] for _ in range(hidden)],
        "w": [rng.gauss(0, s) for _ in range(width)],
        "b": 0.0,
    }
    for epoch in range(len(xp.link.history), cfg.epochs):
        rng.shuffle(train)
        for x, y in train:  # plain SGD, one sample at a time; backprop by hand
            feats = (
                x
                if not hidden
                else [math.tanh(sum(a * xi for a, xi in zip(r, x))) for r in params["W1"]]
            )
            err = forward(params, x) - y
            if hidden:
                for j, row in enumerate(params["W1"]):
                    grad_h = err * params["w"][j] * (1 - feats[j] ** 2)
                    params["W1"][j] = [a - cfg.lr * grad_h * xi for a, xi in zip(row, x)]
            params["w"] = [wi - cfg.lr * err * f for wi, f in zip(params["w"], feats)]
            params["b"] -= cfg.lr * err
        t_loss, t_acc = _eval(params, train)
        v_loss, v_acc = _eval(params, valid)
        xp.link.push_metrics(
            {"train": {"loss": t_loss, "acc": t_acc}, "valid": {"loss": v_loss, "acc": v_acc}}
        )
        if cfg.logging.verbose:
            print(f"epoch {epoch}: valid acc {v_acc:.3f}", flush=True)


def _eval(params, data):
    loss = correct = 0.0
    for x, y in data:
        p = forward(params, x)
        loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
        correct += (p > 0.5) == (y > 0.5)
    return loss / len(data), correct / len(data)


assert evaluate  # shared helper, imported for completeness of the example API


if __name__ == "__main__":
    main()
