"""The forecaster families. All share one frame (`Forecaster`):

    history [batch, window, channels]  ->  quantiles [batch, horizon, channels, 3]  (p10, p50, p90)

Channels are forecast independently with shared weights (channel independence, as in DLinear
and PatchTST), so one network serves one metric or the prototype's seven. Normalisation is
inside the graph: each channel's window is standardised by its own mean and standard
deviation, the core network works in those units, and the output is scaled back. The host
therefore feeds raw values of any magnitude. Quantiles cannot cross: the core predicts the
median and two positive offsets; `interval_scale` (fitted after training on held-out data)
widens or narrows the offsets so that the p10-p90 interval covers about 80%.

Seasonal context (optional, `context` in the config and the card): the history tensor then
starts with one segment per lag (e.g. one day, one week), oldest lag first, before the window:

    history [batch, lags * points + window, channels]

Each segment is the `points` values ending `horizon` points after the same time one lag
earlier: what happened then around now and over the coming horizon. The host (and training)
feeds NaN wherever that past is not known (a young series, a gap, a lag longer than it keeps).
The graph standardises the segments by the recent window's mean and deviation, so yesterday's
level is seen against today's, and gives the core both the values (NaN -> 0) and a
present/absent flag per point, so one network serves series with and without the past.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

QUANTILES = (0.1, 0.5, 0.9)
CLIP = 10.0  # standardised context values beyond this are clipped (a flat window, a spike)


class Forecaster(nn.Module):
    def __init__(self, core: nn.Module, window: int, horizon: int, channels: int, context: int = 0):
        super().__init__()
        self.core = core
        self.window, self.horizon, self.channels, self.context = window, horizon, channels, context
        self.register_buffer("interval_scale", torch.ones(()))

    def normalised(self, z: torch.Tensor, ctx: torch.Tensor | None = None) -> torch.Tensor:
        """[n, window] standardised (and [n, 2 * context] context features) -> [n, horizon, 3]
        standardised quantiles."""
        out = (self.core(z) if ctx is None else self.core(z, ctx)).reshape(-1, self.horizon, 3)
        median = out[:, :, 1]
        below = F.softplus(out[:, :, 0]) * self.interval_scale
        above = F.softplus(out[:, :, 2]) * self.interval_scale
        return torch.stack([median - below, median, median + above], dim=-1)

    @staticmethod
    def standardise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[n, window] -> (z, mean, scale), each row by its own mean and deviation."""
        mean = x.mean(dim=1, keepdim=True)
        scale = (x - mean).pow(2).mean(dim=1, keepdim=True).sqrt() + 0.01 * mean.abs() + 1e-6
        return (x - mean) / scale, mean, scale

    @staticmethod
    def context_features(c: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """[n, context] raw, NaN where unknown -> [n, 2 * context]: the values in the window's
        units (clipped, 0 where unknown), then 1 where known."""
        zc = (c - mean) / scale
        present = ~torch.isnan(zc)
        values = torch.where(present, zc.clamp(-CLIP, CLIP), torch.zeros_like(zc))
        return torch.cat([values, present.to(zc.dtype)], dim=1)

    def rows(self, rows: torch.Tensor):
        """[n, context + window] raw rows -> (standardised quantiles [n, horizon, 3], mean, scale)."""
        x = rows[:, self.context:]
        z, mean, scale = self.standardise(x)
        ctx = self.context_features(rows[:, :self.context], mean, scale) if self.context else None
        return self.normalised(z, ctx), mean, scale

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        batch = history.shape[0]
        rows = history.transpose(1, 2).reshape(-1, self.context + self.window)  # [batch * channels, T]
        q, mean, scale = self.rows(rows)
        q = q * scale.unsqueeze(-1) + mean.unsqueeze(-1)  # [batch * channels, horizon, 3]
        return q.reshape(batch, self.channels, self.horizon, 3).transpose(1, 2)


class DLinear(nn.Module):
    """Zeng et al. 2023: a moving-average trend and the remainder, each mapped linearly."""

    def __init__(self, window: int, horizon: int, kernel: int = 13, context: int = 0):
        super().__init__()
        self.kernel = kernel
        self.trend = nn.Linear(window, horizon * 3)
        self.rest = nn.Linear(window, horizon * 3)
        self.past = nn.Linear(2 * context, horizon * 3) if context else None

    def forward(self, z, ctx=None):
        pad = self.kernel // 2
        padded = F.pad(z.unsqueeze(1), (pad, self.kernel - 1 - pad), mode="replicate")
        trend = F.avg_pool1d(padded, self.kernel, stride=1).squeeze(1)
        out = self.trend(trend) + self.rest(z - trend)
        return out if ctx is None else out + self.past(ctx)


class Lstm(nn.Module):
    """One LSTM layer over the window (time-major: ONNX Runtime's CPU LSTM wants it), then a
    linear head on the last state and the last value."""

    def __init__(self, window: int, horizon: int, hidden: int = 64, context: int = 0):
        super().__init__()
        self.lstm = nn.LSTM(input_size=1, hidden_size=hidden)
        self.head = nn.Linear(hidden + 1 + 2 * context, horizon * 3)

    def forward(self, z, ctx=None):
        seq = z.transpose(0, 1).unsqueeze(-1)  # [window, n, 1]
        _, (h, _) = self.lstm(seq)
        return self.head(torch.cat([h[-1], z[:, -1:]] + ([] if ctx is None else [ctx]), dim=1))


class Attention(nn.Module):
    """Plain multi-head self-attention (written out: exports to ONNX as matmuls and softmax)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(x).reshape(n, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A small encoder over patches of the window (PatchTST-style), then a linear head."""

    def __init__(self, window: int, horizon: int, patch: int = 6, dim: int = 32, heads: int = 2, layers: int = 2, context: int = 0):
        super().__init__()
        if window % patch:
            raise SystemExit(f"transformer: window {window} is not a multiple of patch {patch}")
        self.patch, self.tokens = patch, window // patch
        self.embed = nn.Linear(patch, dim)
        self.position = nn.Parameter(torch.zeros(1, self.tokens, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(self.tokens * dim + 1 + 2 * context, horizon * 3)

    def forward(self, z, ctx=None):
        x = self.embed(z.reshape(z.shape[0], self.tokens, self.patch)) + self.position
        x = self.norm(self.blocks(x)).flatten(1)
        return self.head(torch.cat([x, z[:, -1:]] + ([] if ctx is None else [ctx]), dim=1))


FAMILIES = {"dlinear": DLinear, "lstm": Lstm, "transformer": Transformer}


def build(family: str, window: int, horizon: int, channels: int, context: int = 0, **options) -> Forecaster:
    """`context`: points of seasonal context before the window (lags x points per lag)."""
    if family not in FAMILIES:
        raise SystemExit(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")
    return Forecaster(FAMILIES[family](window, horizon, context=context, **options), window, horizon, channels, context)


def pinball(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean pinball (quantile) loss; pred [..., 3], target [...]."""
    q = torch.tensor(QUANTILES, dtype=pred.dtype)
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(q * diff, (q - 1) * diff).mean()
