"""``scaled-ql compare RUN_DIR...``: learning curves of several runs on one figure.

Reads each run's TensorBoard events (``<run>/tb``) with TensorBoard's own reader and draws,
per tag, one line per run: by default the evaluation return of every game and the Q-values the
network believes (``q/data``, ``q/pi``), so "how well it does" and "how well it thinks it does"
sit side by side (over-estimation and unlearning show as the two diverging).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

DEFAULT_TAGS = ("eval_return/*", "eval_q_start/*", "eval_discounted_return/*", "q/data", "q/pi", "loss/td", "holdout/td", "online/return")


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """All scalar series of a run: tag -> [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # heavy: on first read only

    tb = Path(run_dir) / "tb"
    if not tb.is_dir():
        raise FileNotFoundError(f"run folder '{run_dir}': expected TensorBoard logs in '{tb}', found none")
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _match(tag: str, patterns: tuple[str, ...]) -> bool:
    return any(tag == p or (p.endswith("*") and tag.startswith(p[:-1])) for p in patterns)


def compare_runs(run_dirs: list[str | Path], out: str | Path, tags: tuple[str, ...] = DEFAULT_TAGS) -> dict:
    """Plot the matching tags of every run into ``out`` (PNG); return the series drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib loads on the first plot only
    from matplotlib.figure import Figure  # (same)

    runs = {str(Path(r).name) if Path(r).name else str(r): read_scalars(r) for r in run_dirs}
    shown = sorted({t for series in runs.values() for t in series if _match(t, tags)})
    if not shown:
        raise ValueError(f"none of the runs {list(runs)} logged a scalar matching {list(tags)}")
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(5 * cols, 3.4 * rows))
    FigureCanvasAgg(fig)
    for i, tag in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        for name, series in runs.items():
            if tag in series:
                steps, values = zip(*series[tag])
                ax.plot(steps, values, label=name, marker="o" if len(steps) < 8 else None)
        ax.set_title(tag)
        ax.set_xlabel("update step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    drawn = {tag: {name: series[tag] for name, series in runs.items() if tag in series} for tag in shown}
    out.with_suffix(".json").write_text(json.dumps(drawn))
    return drawn
