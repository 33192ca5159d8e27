"""threshold, in Python: the plugin template's rule (plugins/template) written in a second
language, to show that the contract in wit/plugin.wit is language-neutral.

It raises the risk when the forecast's upper bound (p90, or the median when the forecaster
gives no interval) crosses `max`. Built with componentize-py (see Makefile, `python-plugin`);
the host tests call it beside the Rust template and expect the same answers.
"""

import math
from typing import List, Optional, Tuple

import wit_world
from wit_world.imports import host
from wit_world.imports.types import Forecast, Level, Risk


def read_config() -> Tuple[float, List[str]]:
    """The `max` setting and the problems found, as the Rust SDK's `Settings` words them."""
    raw = host.setting("max")
    if raw is None:
        return 1.0, []
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value, []
    return 1.0, [f"setting `max` is `{raw}`; it must be a number above 0 (default 1)"]


def human_seconds(seconds: int) -> str:
    """`45s`, `4m`, `1h10m`, as the Rust SDK's `human_seconds`."""
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60}m"


class WitWorld(wit_world.WitWorld):
    def assess(self, forecast: Forecast) -> Risk:
        limit, _ = read_config()
        bound = forecast.upper if forecast.upper is not None else forecast.predicted
        breach: Optional[int] = next((i for i, v in enumerate(bound) if v > limit), None)
        now = forecast.history[-1] if forecast.history else 0.0
        peak = max(bound) if bound else -math.inf
        if now > limit:
            level = Level.CRITICAL
        elif breach is not None:
            level = Level.HIGH
        elif peak > 0.9 * limit:
            level = Level.MEDIUM
        else:
            level = Level.NONE
        seconds_to_breach = None if breach is None else (breach + 1) * forecast.step_seconds
        reason = f"{forecast.metric} predicted up to {peak:.2f} {forecast.unit} (limit {limit:.2f}), now {now:.2f}"
        if seconds_to_breach is not None:
            reason += f"; predicted breach in {human_seconds(seconds_to_breach)}"
        score = min(max(peak / limit, 0.0), 1.0)
        return Risk(level=level, score=score, seconds_to_breach=seconds_to_breach, required_replicas=None, reason=reason)

    def check_settings(self) -> List[str]:
        return read_config()[1]
