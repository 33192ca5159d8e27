"""Scores the shipped univariate models and the baselines with `host backtest` on the held-out
20% of real series, writes each model's scores into its card (`backtest:`), and writes
models/BACKTEST.md, the table the README quotes.

    python models/score.py            (after `make host`; `make models` runs it)

Uses the host's own backtest so that the card, the README and `host backtest` agree.
"""

from __future__ import annotations

import json
import os
import subprocess

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOST = os.path.join(ROOT, "target", "release", "host")
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))

SERIES = [
    ("NASA HTTP requests/min", "nasa-http-1995/nasa_http_requests_per_minute.csv", "requests", ["--mask", "server_outage"]),
    ("Twitter messages/min", "twitter-stream-2021-08/twitter_stream_messages_per_minute.csv", "messages", ["--mask", "in_collection_gap"]),
    ("Bitbrains VM 9 CPU MHz (5 min)", "bitbrains-rnd/2013-8/9.csv", "CPU usage [MHZ]", []),
    ("Bitbrains VM 45 CPU MHz (5 min)", "bitbrains-rnd/2013-8/45.csv", "CPU usage [MHZ]", []),
    ("Google cluster CPU (5 min)", "google-2019-instance-usage/instance_usage_grouped_300_seconds_month.csv", "avg_cpu", ["--step", "5m"]),
]
MODELS = ["lstm", "dlinear", "transformer"]
BASELINES = ["seasonal-naive", "holt-winters", "last"]


def backtest(path: str, column: str, extra: list[str], who: list[str]) -> dict:
    cmd = [HOST, "backtest", "--series", path, "--column", column, "--horizon", "15", "--json", *extra, *who]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)}: {out.stderr}")
    return json.loads(out.stdout)


def main() -> None:
    results: dict[str, dict[str, dict]] = {}
    for label, file, column, extra in SERIES:
        path = os.path.join(DATA, file)
        row = {}
        for m in MODELS:
            row[m] = backtest(path, column, extra, ["--model", os.path.join("models", m, "model.onnx")])
        for b in BASELINES:
            row[b] = backtest(path, column, extra, ["--baseline", b])
        results[label] = row
        print(f"scored {label}", flush=True)

    for m in MODELS:
        card_path = os.path.join(HERE, m, "model.yaml")
        with open(card_path) as f:
            head, card = f.readline(), yaml.safe_load(f)
        card["backtest"] = {
            "command": "host backtest --series FILE --column NAME --horizon 15 (held-out last 20%; see models/BACKTEST.md)",
            "series": [
                {
                    "series": label,
                    "origins": row[m]["origins"],
                    "mase": [round(s["mase"], 4) for s in row[m]["steps"]],
                    "coverage": [round(s["coverage"], 3) for s in row[m]["steps"]],
                }
                for label, row in results.items()
            ],
        }
        with open(card_path, "w") as f:
            f.write(head)
            yaml.safe_dump(card, f, sort_keys=False, width=110)

    lines = [
        "# Backtest of the shipped forecasters",
        "",
        "Rolling origin over the held-out last 20% of each series (the models never saw it), 15 steps",
        "ahead, every origin whose window and targets are real data. MASE is scaled by the in-sample",
        "one-step seasonal naive error (season: one day). The p10-p90 intervals are calibrated online",
        "per step, as `host run` issues them (`host/src/forecast/calibration.rs`; `--uncalibrated` scores",
        "the forecaster's own). Written by `python models/score.py`; each row comes from",
        "`host backtest --series FILE --column NAME --horizon 15 [--model M | --baseline B]`.",
        "",
        "| series | forecaster | MASE h=1 | h=5 | h=10 | h=15 | worst h vs best baseline | p10-p90 coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in results.items():
        for who in MODELS + BASELINES:
            s = row[who]["steps"]
            best = [min(row[b]["steps"][h]["mase"] for b in ("seasonal-naive", "holt-winters")) for h in range(15)]
            margin = max(s[h]["mase"] / best[h] for h in range(15))
            cov = f"{min(x['coverage'] for x in s):.0%}-{max(x['coverage'] for x in s):.0%}"
            name = row[who]["forecaster"] + (" (default)" if who == "lstm" else "")
            lines.append(f"| {label} | {name} | {s[0]['mase']:.3f} | {s[4]['mase']:.3f} | {s[9]['mase']:.3f} | {s[14]['mase']:.3f} | {margin:.2f} | {cov} |")
    lines.append("")
    lines.append("\"worst h vs best baseline\": the largest ratio, over the 15 steps, of the forecaster's MASE to the")
    lines.append("better of seasonal naive and Holt-Winters at that step; below 1.00 means it beats both at every step.")
    with open(os.path.join(HERE, "BACKTEST.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote models/BACKTEST.md and the cards' backtest sections")


if __name__ == "__main__":
    main()
