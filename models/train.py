"""Trains one Augur forecaster and exports it to ONNX with its model card.

    python models/train.py --config models/configs/dlinear.yaml --out models/dlinear

Writes into --out:
  model.onnx      history [batch, window, channels] float32 -> quantiles [batch, horizon, channels, 3]
  model.yaml      the model card the host reads (inputs, window, horizon, steps, quantiles,
                  normalisation, training data and dates; backtest scores are added by score.py)
  reference.json  a few held-out inputs with PyTorch's outputs: the host must match them

Deterministic for a given config, data and library versions (seeded, one thread).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np
import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from augur_models import data, nets  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CLIP = 10.0
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="training config (YAML)")
    ap.add_argument("--out", required=True, help="folder for model.onnx, model.yaml, reference.json")
    ap.add_argument("--data", default=DEFAULT_DATA, help="the shared data folder (default: ../shared/data beside the repo)")
    args = ap.parse_args()

    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    if isinstance(cfg["sources"], str):  # a shared list of sources, relative to the config
        with open(os.path.join(os.path.dirname(args.config), cfg["sources"])) as f:
            cfg["sources"] = yaml.safe_load(f)["sources"]
    torch.manual_seed(cfg.get("seed", 0))
    torch.set_num_threads(1)
    rng = np.random.default_rng(cfg.get("seed", 0))
    window, horizon = int(cfg["window"]), int(cfg["horizon"])
    inputs = cfg.get("inputs", ["any"])
    holdout = float(cfg.get("holdout", 0.2))
    context = data.Context.from_config(cfg.get("context"), window, horizon)
    ctx_size = context.size if context else 0

    started = time.time()
    groups = [data.load(args.data, [spec], cfg.get("limit_rows")) for spec in cfg["sources"]]
    train_idx, val_idx = [], []
    for g, group in enumerate(groups):
        tr, va = [], []
        for s, series in enumerate(group):
            split = series.split(holdout)
            tr += [(s, t) for t in data.windows(series, window, horizon, 0, split)]
            va += [(s, t) for t in data.windows(series, window, horizon, split - window, len(series.values))]
        if not tr:
            raise SystemExit(f"{args.config}: sources[{g}] gives no training window of {window + horizon} points")
        train_idx.append(np.array(tr))
        val_idx.append(np.array(va) if va else np.zeros((0, 2), dtype=int))
    print(f"data: {sum(len(g) for g in groups)} series, {sum(len(t) for t in train_idx)} training windows, "
          f"{sum(len(v) for v in val_idx)} held-out windows ({time.time() - started:.1f}s)", flush=True)

    # Each series with its unusable points as NaN: the seasonal context reads them as unknown.
    filled = [[np.where(s.mask, s.values[:, 0], np.nan) for s in group] for group in groups]

    def batch(pairs_by_group, n, rng, training=True):
        """n rows of [context + window] raw values (context NaN where unknown) and their targets."""
        xs, ys = [], []
        gs = rng.integers(0, len(groups), n)
        for g in gs:
            pairs = pairs_by_group[g]
            s, t = pairs[rng.integers(0, len(pairs))]
            series = groups[g][s]
            v = series.values[:, 0]
            row = v[t:t + window]
            if context:
                past = context.gather(filled[g][s], t + window - 1, series.step, horizon, rng if training else None)
                row = np.concatenate([past, row])
            xs.append(row)
            ys.append(v[t + window:t + window + horizon])
        return torch.tensor(np.array(xs), dtype=torch.float32), torch.tensor(np.array(ys), dtype=torch.float32)

    # Channels share the weights, so training and calibration run on one channel; the export
    # takes the card's channel count.
    model = nets.build(cfg["family"], window, horizon, 1, context=ctx_size, **cfg.get("options", {}))
    train = cfg["training"]
    opt = torch.optim.AdamW(model.parameters(), lr=float(train["lr"]), weight_decay=float(train.get("weight_decay", 1e-4)))
    steps = int(train["steps"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(train["lr"]), total_steps=steps)
    val_pairs = [v if len(v) else t for v, t in zip(val_idx, train_idx)]
    val_x, val_y = batch(val_pairs, int(train.get("validation_windows", 4096)), np.random.default_rng(1), training=False)

    def loss_on(x, y):
        # Targets in the window's own units, clipped: a flat window followed by a jump would
        # otherwise give a huge target and one batch could wreck the weights.
        q, mean, scale = model.rows(x)
        return nets.pinball(q, ((y - mean) / scale).clamp(-CLIP, CLIP))

    model.train()
    for step in range(1, steps + 1):
        x, y = batch(train_idx, int(train["batch"]), rng)
        loss = loss_on(x, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % max(1, steps // 10) == 0 or step == steps:
            with torch.no_grad():
                model.eval()
                val = loss_on(val_x, val_y).item()
                model.train()
            print(f"step {step}/{steps}: train pinball {loss.item():.4f}, held-out {val:.4f}", flush=True)
    model.eval()

    scale = calibrate(model, val_x, val_y)
    model.interval_scale.fill_(scale)
    with torch.no_grad():
        coverage = covered(model, val_x, val_y)
        held_out = loss_on(val_x, val_y).item()
    print(f"interval scale {scale:.3f}: held-out p10-p90 coverage {coverage:.1%}, pinball {held_out:.4f}")

    model.channels = len(inputs)
    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    export(model, ctx_size + window, len(inputs), onnx_path)
    reference = write_reference(model, val_x, len(inputs), os.path.join(args.out, "reference.json"), histories(context, groups, filled, window, horizon))
    check_onnx(onnx_path, reference)
    write_card(cfg, args, groups, holdout, scale, coverage, held_out, time.time() - started, context)
    print(f"wrote {args.out} in {time.time() - started:.0f}s")


def covered(model, x, y) -> float:
    with torch.no_grad():
        q = model(x.unsqueeze(-1))[:, :, 0, :]
    return ((y >= q[..., 0]) & (y <= q[..., 2])).float().mean().item()


def calibrate(model, x, y, target: float = 0.8) -> float:
    """The interval scale at which the held-out p10-p90 coverage is `target` (bisection)."""
    lo, hi = 0.05, 20.0
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        model.interval_scale.fill_(mid)
        if covered(model, x, y) < target:
            lo = mid
        else:
            hi = mid
    return (lo * hi) ** 0.5


def export(model, length: int, channels: int, path: str) -> None:
    import warnings

    example = torch.rand(2, length, channels) * 10
    warnings.filterwarnings("ignore", category=UserWarning)  # constant-folding notes on Slice
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # dynamo=False: opset 17, matches ORT exactly
    torch.onnx.export(
        model, (example,), path, input_names=["history"], output_names=["quantiles"],
        dynamic_axes={"history": {0: "batch"}, "quantiles": {0: "batch"}}, opset_version=17, dynamo=False,
    )


def histories(context, groups, filled, window: int, horizon: int) -> list[dict]:
    """For a model with seasonal context: per training step, one real history long enough for
    every lag, with the row this code gathers from it. The host must gather the same row from
    the same history (its parity test), so the two readings of the card cannot drift apart."""
    if not context:
        return []
    out = []
    for step in sorted({s.step for g in groups for s in g}):
        series = next(s for g in groups for s in g if s.step == step)
        g, k = next((g, k) for g, grp in enumerate(groups) for k, s in enumerate(grp) if s is series)
        reach = max([lp for lp in context.lag_points(step, horizon) if lp] + [0]) + context.points + window + 50
        end = next((e for e in range(min(reach, len(series.values)), len(series.values)) if series.mask[e - window:e].all()), None)
        if end is None:
            continue
        values = filled[g][k][:end]
        row = np.concatenate([context.gather(values, end - 1, step, horizon), values[-window:]])
        out.append({"step": step, "values": [None if v != v else float(v) for v in values], "row": torch.tensor(row, dtype=torch.float32)})
    return out


def write_reference(model, val_x, channels: int, path: str, histories: list[dict]) -> dict:
    """Eight held-out windows (channels repeated with shifts for multi-channel layouts) and
    PyTorch's output for them: the host's parity test runs the same inputs through ort. With
    seasonal context, some rows have it all, some part and some none (NaN, written as null)."""
    x = val_x[:8].clone()
    if model.context:
        x[4:, :model.context] = float("nan")  # the second half: no past known
        x[2:4, :model.context // 2] = float("nan")  # two rows: the older half unknown
    x = x.unsqueeze(-1)
    if channels > 1:
        x = torch.cat([x * (1.0 + 0.1 * c) + c for c in range(channels)], dim=-1)
    with torch.no_grad():
        y = model(x)
    nulls = lambda values: [None if v != v else v for v in values]  # noqa: E731 (NaN -> null)
    reference = {"shape_in": list(x.shape), "shape_out": list(y.shape), "input": nulls(x.flatten().tolist()), "output": y.flatten().tolist()}
    if histories:
        with torch.no_grad():
            for h in histories:
                h["output"] = model(h.pop("row").reshape(1, -1, 1).repeat(1, 1, channels)).flatten().tolist()
        reference["histories"] = histories
    with open(path, "w") as f:
        json.dump(reference, f)
    return reference


def check_onnx(path: str, reference: dict) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = np.array([np.nan if v is None else v for v in reference["input"]], dtype=np.float32).reshape(reference["shape_in"])
    y = session.run(["quantiles"], {"history": x})[0]
    want = np.array(reference["output"], dtype=np.float32)
    # float32 carries ~7 digits: compare relative to the value's size (1e-4 absolute below 1).
    diff = float((np.abs(y.flatten() - want) / np.maximum(1.0, np.abs(want))).max())
    print(f"onnxruntime {ort.__version__} vs PyTorch: max difference {diff:.2e} (relative above 1)")
    if diff > 1e-4:
        raise SystemExit(f"{path}: ONNX Runtime output differs from PyTorch by {diff}")


def write_card(cfg, args, groups, holdout, scale, coverage, held_out, seconds, context) -> None:
    training_data = []
    for spec, group in zip(cfg["sources"], groups):
        training_data.append({
            "source": spec["file"],
            "columns": spec["columns"],
            "series": len(group),
            "step": f"{spec['step']}s",
            "from": group[0].first,
            "to": group[0].last,
            "trained_on": f"first {1 - holdout:.0%} of each series; the last {holdout:.0%} is held out",
        })
    card = {
        "format": "augur-forecaster/1",
        "name": cfg["name"],
        "family": cfg["family"],
        "description": cfg.get("description", "").strip(),
        "inputs": cfg.get("inputs", ["any"]),
        "window": int(cfg["window"]),
        "horizon": int(cfg["horizon"]),
        "steps": [f"{s}s" for s in cfg["steps"]],
        "quantiles": list(nets.QUANTILES),
        **({"context": {
            "lags": [f"{l // 86400}d" if l % 86400 == 0 else f"{l}s" for l in context.lags],
            "points": context.points,
            "max_lag_points": context.max_lag_points,
            "layout": "the history tensor starts with one segment per lag, in the order of lags, then the window; "
                      "a segment is the `points` values ending `horizon` points after the newest point's time one lag "
                      "earlier; NaN where that past is unknown (not kept, a gap, a lag not a whole number of steps, "
                      "or longer than max_lag_points steps)",
        }} if context else {}),
        "tensors": {
            "input": {"name": "history", "shape": ["batch", "context + window" if context else "window", "channels"], "type": "float32"},
            "output": {"name": "quantiles", "shape": ["batch", "horizon", "channels", "quantiles"], "type": "float32"},
        },
        "normalisation": "inside the graph: each channel's window is standardised by its own mean and "
                         "standard deviation (+ 0.01 |mean| + 1e-6) and the output scaled back; feed raw values",
        "calibration": {"interval_scale": round(scale, 6), "held_out_coverage_p10_p90": round(coverage, 4), "held_out_pinball": round(held_out, 6)},
        "training": {
            "command": f"python models/train.py --config {os.path.relpath(args.config, os.path.join(HERE, '..'))} --out {os.path.relpath(args.out, os.path.join(HERE, '..'))}",
            "data": training_data,
            "steps": int(cfg["training"]["steps"]),
            "batch": int(cfg["training"]["batch"]),
            "seed": cfg.get("seed", 0),
            "torch": torch.__version__.split("+")[0],
            "seconds": round(seconds),
            "date": datetime.date.today().isoformat(),
        },
    }
    with open(os.path.join(args.out, "model.yaml"), "w") as f:
        f.write("# Model card: read by the host, which refuses the model if the policy does not match it.\n")
        yaml.safe_dump(card, f, sort_keys=False, width=110)


if __name__ == "__main__":
    main()
