"""Scores the shipped univariate models, the skill gate (what `host run` serves by default) and
the baselines with `host backtest` on the held-out 20% of real series, writes each model's
scores into its card (`backtest:`), and writes models/BACKTEST.md, the tables the README quotes.

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
    ("Alibaba cluster CPU % (5 min)", "alibaba-2018-machine-usage/machine_usage_days_1_to_8_grouped_300_seconds.csv", "cpu_util_percent", ["--step", "5m"]),
] + [
    (f"NAB {name} CPU % (5 min)", f"nab/data/realAWSCloudwatch/{name.replace(' ', '_cpu_utilization_')}.csv", "value", [])
    for name in ["ec2 24ae8d", "ec2 5f5533", "ec2 825cc2", "ec2 c6585a", "rds cc0c53"]
]
MODELS = ["lstm", "dlinear", "transformer"]
BASELINES = ["seasonal-naive", "holt-winters", "last"]
GATE = "gate"  # the skill gate over the default model and the baselines: what `host run` serves
DEFAULT = GATE
MARGIN = 0.85  # the acceptance: the default's MASE at least 15% below the best baseline's at every step


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
        row[GATE] = backtest(path, column, extra, ["--gate"])
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

    def best(row: dict) -> list[float]:
        return [min(row[b]["steps"][h]["mase"] for b in BASELINES) for h in range(15)]

    def coverage(steps: list[dict]) -> str:
        return f"{min(x['coverage'] for x in steps):.0%}-{max(x['coverage'] for x in steps):.0%}"

    lines = [
        "# Backtest of the shipped forecasters",
        "",
        "Rolling origin over the held-out last 20% of each series (the models never saw it), 15 steps",
        "ahead, every origin whose window and targets are real data. MASE is scaled by the in-sample",
        "one-step seasonal naive error (season: one day). The p10-p90 intervals are calibrated online",
        "per step and per forecaster, as `host run` issues them (`host/src/forecast/calibration.rs`;",
        "`--uncalibrated` scores the forecaster's own). Written by `python models/score.py`; each row",
        "comes from `host backtest --series FILE --column NAME --horizon 15 [--model M | --baseline B | --gate]`.",
        "",
        "`gate(model:lstm)` is what `host run` serves by default: the skill gate",
        "(`host/src/forecast/gate.rs`) over the shipped LSTM, Holt's damped trend (the policy's fallback),",
        "last value, seasonal naive, Holt-Winters and a blend of the best two, each origin served by",
        "the contender with the best recent pinball loss on this series. It starts unjudged at the",
        "first held-out origin, as a fresh `host run` without a warm start does: the fallback serves",
        "the first 74 origins.",
        "",
        "## The default against the best simple baseline, step by step",
        "",
        "Ratio: the forecaster's MASE over the best of last value, seasonal naive and Holt-Winters at",
        f"that step. The acceptance asks for {MARGIN:.2f} or less at every step 1-15 and p10-p90 coverage of 78-82%.",
        "",
        "| series | default: worst ratio | steps above 0.85 | coverage | model alone: worst ratio | served by |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in results.items():
        b = best(row)
        ratios = [row[DEFAULT]["steps"][h]["mase"] / b[h] for h in range(15)]
        alone = max(row["lstm"]["steps"][h]["mase"] / b[h] for h in range(15))
        above = [str(h + 1) for h in range(15) if ratios[h] > MARGIN]
        steps_above = "none" if not above else (f"{above[0]}-{above[-1]}" if len(above) == int(above[-1]) - int(above[0]) + 1 else ", ".join(above))
        served = row[DEFAULT].get("served", {})
        total = sum(served.values()) or 1
        who = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(served.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {label} | {max(ratios):.2f} | {steps_above} | {coverage(row[DEFAULT]['steps'])} | {alone:.2f} | {who} |")
    lines += [
        "",
        "## Every forecaster",
        "",
        "| series | forecaster | MASE h=1 | h=5 | h=10 | h=15 | worst h vs best baseline | p10-p90 coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in results.items():
        b = best(row)
        for who in [GATE] + MODELS + BASELINES:
            s = row[who]["steps"]
            margin = max(s[h]["mase"] / b[h] for h in range(15))
            name = row[who]["forecaster"] + (" (default)" if who == DEFAULT else "")
            lines.append(f"| {label} | {name} | {s[0]['mase']:.3f} | {s[4]['mase']:.3f} | {s[9]['mase']:.3f} | {s[14]['mase']:.3f} | {margin:.2f} | {coverage(s)} |")
    lines.append("")
    lines.append("\"worst h vs best baseline\": the largest ratio, over the 15 steps, of the forecaster's MASE to the")
    lines.append("best of last value, seasonal naive and Holt-Winters at that step; below 1.00 means it beats all three at every step.")
    with open(os.path.join(HERE, "BACKTEST.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote models/BACKTEST.md and the cards' backtest sections")


if __name__ == "__main__":
    main()
