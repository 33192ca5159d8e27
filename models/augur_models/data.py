"""Training series: the real public traces in ../shared/data, read, cleaned and split in time.

Every series is split at the same fraction of its length: the first part trains, the tail is
held out for validation and for the backtests quoted in the model card and README. Points a
trace marks as "no data" (the NASA outage, the Twitter collection gaps) are masked: no window
that touches one is used.
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass

import numpy as np


@dataclass
class Series:
    """One univariate series (or, for the prototype layout, several aligned channels)."""

    name: str
    values: np.ndarray  # [T, C] float64
    mask: np.ndarray  # [T] bool: True where the point is usable
    step: int  # seconds
    source: str  # file, relative to the data root
    columns: list[str]
    first: str  # first timestamp, as the file gives it (or a row number)
    last: str

    def split(self, holdout: float) -> int:
        """Index of the first held-out point."""
        return int(len(self.values) * (1.0 - holdout))


def read_csv(path: str) -> tuple[list[str], list[list[str]]]:
    """Reads a CSV with ',' or ';' separators (Bitbrains uses ';\\t'); trims cells."""
    with open(path, newline="") as f:
        head = f.readline()
        delimiter = ";" if head.count(";") > head.count(",") else ","
        f.seek(0)
        rows = [[c.strip() for c in row] for row in csv.reader(f, delimiter=delimiter) if row]
    return rows[0], rows[1:]


def column(header: list[str], rows: list[list[str]], name: str) -> np.ndarray:
    i = header.index(name)
    return np.array([float(r[i]) for r in rows], dtype=np.float64)


def load_source(root: str, spec: dict, limit: int | None = None) -> list[Series]:
    """Loads the series one `sources` entry of a training config names."""
    pattern = os.path.join(root, spec["file"])
    files = sorted(glob.glob(pattern), key=_natural)
    if not files:
        raise SystemExit(f"training config: sources: no file matches {pattern}; fix: point --data at ../shared/data")
    if "files" in spec:
        wanted = set(spec["files"])
        files = [f for f in files if os.path.basename(f) in wanted]
    files = [f for f in files if os.path.basename(f) not in set(spec.get("exclude", []))]
    out = []
    for path in files:
        header, rows = read_csv(path)
        if spec.get("sort_by"):
            rows = _dedup_sorted(header, rows, spec["sort_by"])
        if limit:
            rows = rows[:limit]
        columns = spec["columns"]
        missing = [c for c in columns if c not in header]
        if missing:
            raise SystemExit(f"{path}: no column {missing[0]!r}; the file has {header}")
        values = np.stack([column(header, rows, c) for c in columns], axis=1)
        mask = np.isfinite(values).all(axis=1)
        if spec.get("mask"):
            mask &= column(header, rows, spec["mask"]) == 0
        if spec.get("mask_zero_runs"):
            mask &= ~zero_runs(values[:, 0], int(spec["mask_zero_runs"]))
        time_col = spec.get("time")
        first, last = (rows[0][header.index(time_col)], rows[-1][header.index(time_col)]) if time_col else ("row 1", f"row {len(rows)}")
        rel = os.path.relpath(path, root)
        out.append(Series(f"{rel}:{'+'.join(columns)}", values, mask, int(spec["step"]), rel, columns, first, last))
    return out


def load(root: str, sources: list[dict], limit: int | None = None) -> list[Series]:
    series = []
    for spec in sources:
        if spec.get("per_column"):
            for c in spec["columns"]:
                series += load_source(root, {**spec, "columns": [c]}, limit)
        else:
            series += load_source(root, spec, limit)
    return series


def windows(series: Series, window: int, horizon: int, lo: int, hi: int) -> np.ndarray:
    """Start indices t in [lo, hi) of every usable window [t, t + window + horizon)."""
    n = window + horizon
    bad = np.concatenate([[0], np.cumsum(~series.mask)])
    starts = np.arange(lo, max(lo, hi - n + 1))
    ok = bad[starts + n] - bad[starts] == 0
    return starts[ok]


def zero_runs(v: np.ndarray, length: int) -> np.ndarray:
    """True on every point of a run of at least `length` zeros (a trace's "no data")."""
    out = np.zeros(len(v), dtype=bool)
    start = None
    for i, x in enumerate(np.append(v, 1.0)):
        if x == 0 and start is None:
            start = i
        elif x != 0 and start is not None:
            if i - start >= length:
                out[start:i] = True
            start = None
    return out


def _natural(path: str):
    base = os.path.basename(path)
    stem = base.split(".")[0]
    return (0, int(stem), base) if stem.isdigit() else (1, 0, base)


def _dedup_sorted(header, rows, time_col):
    i = header.index(time_col)
    seen = {}
    for r in rows:
        seen.setdefault(float(r[i]), r)
    return [seen[k] for k in sorted(seen)]


@dataclass
class Context:
    """Seasonal context (a config's and card's `context`): for each lag, the `points` values
    ending `horizon` points after the origin one lag earlier. A lag that is not a whole number
    of the series' steps, is shorter than the horizon (it would reach past the origin) or is
    longer than `max_lag_points` steps (the host keeps no more history than that) is unknown:
    all NaN, as the host feeds it."""

    lags: list[int]  # seconds
    points: int
    max_lag_points: int
    dropout: float  # training only: the chance a segment is hidden, so the model learns without it

    @classmethod
    def from_config(cls, cfg: dict | None, window: int, horizon: int) -> "Context | None":
        if not cfg:
            return None
        return cls([seconds(l) for l in cfg["lags"]], int(cfg.get("points", window + horizon)), int(cfg.get("max_lag_points", 2016)), float(cfg.get("dropout", 0.25)))

    @property
    def size(self) -> int:
        return len(self.lags) * self.points

    def lag_points(self, step: int, horizon: int) -> list[int | None]:
        out = []
        for lag in self.lags:
            lp = lag // step if lag % step == 0 else None
            out.append(lp if lp is not None and horizon <= lp <= self.max_lag_points else None)
        return out

    def gather(self, filled: np.ndarray, origin: int, step: int, horizon: int, rng=None) -> np.ndarray:
        """[size] context for the origin (index of the newest point) of a series whose unusable
        points are NaN in `filled`."""
        out = np.full(self.size, np.nan)
        for k, lp in enumerate(self.lag_points(step, horizon)):
            if lp is None or (rng is not None and rng.random() < self.dropout):
                continue
            idx = origin + horizon - lp - self.points + 1 + np.arange(self.points)
            ok = idx >= 0
            out[k * self.points:(k + 1) * self.points][ok] = filled[idx[ok]]
        return out


def seconds(text) -> int:
    """`1d`, `7d`, `12h`, `30m`, `300s` or a number of seconds."""
    if isinstance(text, (int, float)):
        return int(text)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
