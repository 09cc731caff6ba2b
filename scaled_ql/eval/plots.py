"""Plots of evaluation results (matplotlib, drawn off-screen on the Agg canvas)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_normalized_scores(results: dict[str, Any], path: str | Path) -> Path:
    """Bar chart of per-game human-normalized scores (best first) with the IQM and its CI.

    ``results`` is what :func:`scaled_ql.eval.evaluate.evaluate` returns. Games without
    reference scores are not drawn; the title names them. Writes ``path`` (PNG) and returns it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: matplotlib loads on the first plot only
    from matplotlib.figure import Figure  # (same)

    per_game = results.get("games", {})
    scored = sorted(
        ((name, r["human_normalized"]) for name, r in per_game.items() if r["human_normalized"] is not None),
        key=lambda item: item[1],
        reverse=True,
    )
    left_out = [name for name, r in per_game.items() if r["human_normalized"] is None]

    fig = Figure(figsize=(max(6.0, 0.35 * len(scored) + 2.0), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if scored:
        names, values = zip(*scored)
        ax.bar(range(len(names)), values, color=["tab:blue" if v >= 0 else "tab:red" for v in values])
        ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=8)
        ax.axhline(1.0, color="gray", linestyle=":", linewidth=1, label="human (1.0)")
        ax.axhline(0.0, color="black", linewidth=0.8)
        iqm = results.get("aggregate", {}).get("iqm", {})
        if iqm.get("value") is not None:
            ax.axhline(iqm["value"], color="tab:orange", linewidth=1.5, label=f"IQM {iqm['value']:.3f}")
            if iqm.get("ci"):
                ax.axhspan(iqm["ci"][0], iqm["ci"][1], color="tab:orange", alpha=0.15, label="IQM 95% CI")
        ax.legend(fontsize=8, loc="upper right")
    else:
        ax.text(0.5, 0.5, "no game with reference scores", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_ylabel("human-normalized score")
    title = f"Human-normalized scores ({len(scored)} games)"
    if left_out:
        title += f"\nnot shown (no reference scores): {', '.join(left_out)}"
    ax.set_title(title, fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
