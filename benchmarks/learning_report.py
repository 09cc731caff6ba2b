"""``docs/RESULTS.md`` and its plots, written from the results folder of ``scaled-ql bench learning``.

Nothing here runs a job or edits a number: every table cell and every plot comes from the JSON
files the jobs left (:class:`benchmarks.learning_bench.LearningBenchmark`). Uncertainty is
reported two ways: the standard error over seeds (of each seed's mean evaluation return; what
another seed would change) and the standard error over all evaluation episodes pooled; the IQM of
human-normalized scores carries a stratified-bootstrap 95% interval over seeds (rliable's
definition, ``scaled_ql.eval.scores``).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.learning_goals import goal_lines
from benchmarks.learning_tables import (
    curve_text,
    draw_curve,
    finetune_lines,
    fmt,
    lever_lines,
    mean_curve,
    mixed_lines,
    peer_lines,
    policy_cell,
    save_figure,
    se_from_std,
    summarize,
    transfer_lines,
    value_cell,
    verdict,
)
from scaled_ql.eval.scores import iqm, stratified_bootstrap_ci
from scaled_ql.games import human_normalized_score


def write_report(bench, out: str | Path, plots_dir: str | Path | None = None) -> Path:
    """Write the report of ``bench`` (a ``LearningBenchmark``) to ``out`` and its PNGs to
    ``plots_dir`` (default: the results folder), linked relative to ``out``; the numbers of every
    table, unformatted, go beside it as JSON (``out`` with the suffix ``.json``, see :func:`summary_path`)."""
    suite, results = bench.suite, bench.load_results()
    out = Path(out)
    plots = Path(plots_dir) if plots_dir is not None else bench.results
    plots.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731
    games = list(suite.games)
    data = results.get("data/main")
    behaviour = data["behaviour"] if data else {}
    missing = [j.id for j in bench.jobs if j.id not in results]
    walls = [r.get("wall_s", 0.0) for r in results.values()]
    commits = sorted({r.get("commit", "unknown") for r in results.values()})
    machines = sorted({r.get("machine", "?") for r in results.values()})
    summary: dict[str, Any] = {"suite": suite.name, "jobs": {"finished": len(results), "total": len(bench.jobs), "missing": missing},
                               "commits": commits, "tables": {}}

    lines = [
        f"# Learning results: suite `{suite.name}`",
        "",
        f"Produced by `scaled-ql bench learning --suite {suite.name}` from the job results in "
        f"`{rel(bench.results)}/`; do not edit by hand (rerun with `--report-only`). The numbers of every table, "
        f"unformatted, are in `{summary_path(out).name}` beside this file.",
        "",
        f"- Written: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; jobs finished: {len(results)} of {len(bench.jobs)}"
        + (f" (missing: {', '.join(missing)})" if missing else ""),
        f"- Commit(s) the jobs ran at: {', '.join(f'`{c}`' for c in commits) or 'none'}",
        f"- Machine: {'; '.join(machines) or '?'}",
        f"- Wall time of the finished jobs: {sum(walls) / 3600:.2f} h",
        "",
        "## Setup",
        "",
    ]
    lines += _setup_lines(bench, data)
    if suite.notes:
        lines += ["", suite.notes]

    # The main tables at each budget, the last budget first (the suite's headline).
    first = bench.config().train
    budgets = [("", f"{first.steps:,} updates at learning rate {first.lr:g}, the first budget", ()), *suite.table_budgets]
    tables = []
    for budget, label, extra in reversed(budgets):
        part = summary["tables"][budget or "first"] = {"label": label, "overrides": list(extra)}
        by_method = {m.name: [r for r in results.values() if r["kind"] == "multi" and r["method"] == m.name
                              and r.get("budget", "") == budget] for m in suite.methods}
        title = label if not extra else f"{label} (`{' '.join(extra)}`)"
        lines += ["", f"## Main tables{f': {title}' if len(budgets) > 1 else ''}", "",
                  *_table_lines(bench, results, budget, by_method, behaviour, part)]
        tables.append((budget, title, by_method))
    lines += ["", *finetune_lines(bench, results, summary), ""]
    if suite.mixed_data:
        lines += [*mixed_lines(bench, results, summary), ""]
    if suite.transfer is not None:
        lines += [*transfer_lines(bench, results, plots, rel, summary), ""]
    if suite.peer:
        lines += [*peer_lines(bench, results, behaviour, summary), ""]
    if any(p.group for p in suite.probes):
        lines += [*lever_lines(bench, results, behaviour, summary), ""]
    if any(not p.group for p in suite.probes):
        lines += [*_probe_lines(bench, results, behaviour, summary), ""]
    lines += _plot_lines(bench, results, behaviour, tables, plots, rel, summary)
    at = lines.index("## Setup")  # the goals go first, read off everything above
    lines[at:at] = [*goal_lines(bench, summary), ""]
    notes = bench.results / "NOTES.md"
    if notes.is_file():
        lines += ["", "## Authors' reading of these numbers", "", f"(From `{rel(notes)}`, written by hand after the runs.)", "",
                  notes.read_text().strip()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    summary_path(out).write_text(json.dumps(_plain(summary), indent=1, sort_keys=True) + "\n")
    return out


def _table_lines(bench, results: dict[str, dict[str, Any]], budget: str, by_method: dict[str, list[dict[str, Any]]],
                 behaviour: dict[str, Any], part: dict[str, Any]) -> list[str]:
    """The returns per game, their aggregate and the greedy policies of every method at one budget."""
    suite, games = bench.suite, list(bench.suite.games)
    lines = ["Multi-game runs: one network, a head per game. Return: mean over seeds of each seed's mean evaluation "
             "return, +/- the standard error over seeds; in brackets the standard error over all evaluation episodes "
             "pooled. HNS: human-normalized score of the mean. Versus behaviour: better or worse when the gap exceeds "
             "twice the combined standard error.", ""]
    summaries: dict[str, dict[str, Any]] = {}
    part["returns"], part["aggregate"] = {}, {}
    for game in games:
        b = behaviour.get(game)
        table = part["returns"][game] = {"behaviour": b}
        lines += [f"### {game}", "", "| policy | return | (SE episodes) | seeds | HNS | versus behaviour |", "|---|---:|---:|---:|---:|---|"]
        if b:
            lines.append(f"| behaviour (scripted, epsilon {b['epsilon']}) | {fmt(b['mean'])} +/- {fmt(se_from_std(b['std'], b['episodes']))} "
                         f"| | {b['episodes']} episodes | {fmt(b['human_normalized'], 3)} | |")
        rows = [(m.name, m.label, by_method[m.name]) for m in suite.methods]
        if game == suite.single_game:
            rows += [(f"{name}/single-game", f"{bench.methods[name].label}, single-game run",
                      [r for r in results.values() if r["kind"] == "single" and r["method"] == name and r.get("budget", "") == budget])
                     for name in suite.single_methods]
        for key, label, runs in rows:
            sm = table[key] = summarize(runs, game)
            if sm is None:
                lines.append(f"| {label} | not run | | | | |")
                continue
            sm["versus_behaviour"] = verdict(sm, b).strip("*") if b else None
            summaries[f"{key}/{game}"] = sm
            lines.append(f"| {label} | {fmt(sm['mean'])} +/- {fmt(sm['se_seeds'])} | ({fmt(sm['se_episodes'])}) | {sm['seeds']} "
                         f"| {fmt(sm['hns'], 3)} | {verdict(sm, b) if b else 'n/a'} |")
        lines.append("")

    lines += ["### Aggregate over games", "", "IQM of human-normalized scores over (seed, game) pairs, with a stratified-bootstrap "
              "95% interval resampling seeds within each game (2,000 replicates).", "",
              "| method | IQM HNS | 95% CI | mean HNS | beats behaviour on |", "|---|---:|---|---:|---|"]
    for m in suite.methods:
        matrix = _hns_matrix(by_method[m.name], games)
        if matrix is None:
            part["aggregate"][m.name] = None
            lines.append(f"| {m.label} | not run | | | |")
            continue
        lo, hi = stratified_bootstrap_ci(matrix, iqm, reps=2000, seed=0)
        wins = [g for g in games if f"{m.name}/{g}" in summaries and g in behaviour
                and verdict(summaries[f"{m.name}/{g}"], behaviour[g]) == "**better**"]
        part["aggregate"][m.name] = {"iqm_hns": float(iqm(matrix)), "ci": [lo, hi], "mean_hns": float(matrix.mean()),
                                     "beats_behaviour_on": wins}
        lines.append(f"| {m.label} | {fmt(float(iqm(matrix)), 3)} | [{fmt(lo, 3)}, {fmt(hi, 3)}] | {fmt(float(matrix.mean()), 3)} "
                     f"| {', '.join(wins) or 'none'} ({len(wins)} of {len(games)}) |")
    if behaviour:
        bm = np.array([[human_normalized_score(g, behaviour[g]["mean"]) for g in games]], dtype=float)
        lines.append(f"| behaviour | {fmt(float(iqm(bm)), 3)} | | {fmt(float(bm.mean()), 3)} | |")
    return lines + ["", *_policy_lines(suite, games, by_method, part), ""]


def summary_path(report: str | Path) -> Path:
    """Where :func:`write_report` puts the numbers of ``report``'s tables (``RESULTS.md``: ``RESULTS.json``)."""
    return Path(report).with_suffix(".json")


def _plain(x: Any) -> Any:
    """``x`` as strict JSON: NaN and infinities as null, numpy scalars and tuples as plain values."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _setup_lines(bench, data: dict[str, Any] | None) -> list[str]:
    suite = bench.suite
    cfg = bench.config(f"games=[{', '.join(suite.games)}]", *suite.data)
    lines = [
        f"- Games: {', '.join(suite.games)}. Behaviour policy: the RAM-reading controller of `data_prep/scripted.py` "
        f"with a uniformly random action with probability {cfg.prep.epsilon}; {cfg.prep.steps_per_game:,} agent steps per "
        f"game, episodes cut at {cfg.prep.max_episode_steps} agent steps (`scaled-ql prep` with "
        f"`{' '.join(suite.data)}`).",
        f"- Protocol: ALE v5, sticky actions {cfg.env.sticky_action_prob}, frameskip {cfg.env.frameskip}, 84x84 grayscale, "
        f"4-frame stacks; evaluation {cfg.eval.episodes} episodes per game and seed, epsilon {cfg.eval.epsilon}, cut at "
        f"{cfg.eval.max_episode_steps} agent steps (the behaviour policy is measured the same way).",
        f"- Network and budget (every method): {cfg.model.backbone} backbone, {cfg.train.steps:,} updates of batch "
        f"{cfg.train.batch_size} ({cfg.train.batch_size // len(suite.games)} per game), lr {cfg.train.lr}, "
        f"{cfg.data.n_step}-step returns, gamma {cfg.data.gamma}, target update every {cfg.train.target_update_period}. "
        f"Seeds {', '.join(map(str, bench.seeds))}.",
        "- Methods: " + "; ".join(f"{m.label} (`{' '.join(m.overrides)}`)" for m in suite.methods) + ".",
        f"- Single-game runs: {suite.single_game} alone, same per-game batch and number of updates.",
    ]
    if data:
        stats = "; ".join(f"{g}: {v['episodes']} episodes, return {v.get('return_mean', float('nan')):.1f} "
                          f"+/- {v.get('return_std', float('nan')):.1f}" for g, v in data["games"].items())
        lines.append(f"- The dataset's own episodes (from its card): {stats}.")
    return lines


def _hns_matrix(records: list[dict[str, Any]], games: list[str]) -> np.ndarray | None:
    rows = [[human_normalized_score(g, r["final"][g]["mean"]) for g in games] for r in records
            if all(g in r.get("final", {}) for g in games)]
    return np.array(rows, dtype=float) if rows else None


def _policy_lines(suite, games: list[str], by_method: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> list[str]:
    """How state-dependent each method's greedy policy is, on the data's own states."""
    lines = ["### What the greedy policies do on the data's states", "",
             "Share of the most frequent greedy action over 256 training states per game (1.00: the same action "
             "everywhere, the policy ignores the screen), and in brackets how often it is the data's action; mean "
             "over the seeds whose results record it (for runs finished before the benchmark measured this, "
             "computed afterwards from the run's final checkpoint by the same command).", "", "| method | seeds | " + " | ".join(games) + " |",
             "|---|---:|" + "---:|" * len(games)]
    table = summary["policy"] = {}
    for m in suite.methods:
        runs = [r for r in by_method[m.name] if "policy" in r]
        table[m.name] = {"seeds": len(runs)}
        if not runs:
            lines.append(f"| {m.label} | 0 | " + " | ".join("n/a" for _ in games) + " |")
            continue
        cells = []
        for g in games:
            top = np.mean([r["policy"][g]["top_share"] for r in runs])
            agree = np.mean([r["policy"][g]["agreement"] for r in runs])
            table[m.name][g] = {"top_share": top, "agreement": agree}
            cells.append(f"{top:.2f} ({agree:.2f})")
        lines.append(f"| {m.label} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def _probe_lines(bench, results: dict[str, dict[str, Any]], behaviour: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The probes beside the single-game runs of the tables they question: the seed each setting
    was tried on, then the tables' seeds it was checked on, as separate rows."""
    suite = bench.suite
    lines = ["## Tried beyond the fixed settings", "",
             "Each probe changes one thing against the single-game runs (same data, network, per-game batch). It was "
             "tried first on a seed the tables above do not use; its rows on the tables' seeds check it on seeds it was "
             "not chosen on. Not mixed into the tables: the multi-game runs of every method would need the same change. "
             "Start value: mean max_a Q(s0, a) over the data's episode-start states against the discounted clipped return "
             "the policy got (as in the values plot).", "",
             "| run | updates | return | (SE episodes) | versus behaviour | return at each evaluation (mean over seeds) "
             "| start value: thinks / gets | top action share (agreement) |",
             "|---|---:|---:|---:|---|---|---|---|"]
    for p in (p for p in suite.probes if not p.group):
        base = [r for r in results.values() if r["kind"] == "single" and r["method"] == p.method and p.game in r["final"]
                and not r.get("budget")]
        done = [results[f"probe/{p.name}/seed{s}"] for s in p.seeds if f"probe/{p.name}/seed{s}" in results]
        tried = [r for r in done if r["seed"] == p.seeds[0]]
        checked = [r for r in done if r["seed"] != p.seeds[0]]
        seeds = lambda runs: ", ".join(str(r["seed"]) for r in runs)  # noqa: E731
        rows = [(f"{bench.methods[p.method].label}, {p.game} alone, the tables' budget (seeds {seeds(base)})", base)] if base else []
        rows.append((f"{p.label} (`{' '.join(p.overrides)}`), seed {p.seeds[0]} (where it was tried)", tried))
        if len(p.seeds) > 1:
            rows.append((f"{p.label}, seeds {seeds(checked) or ', '.join(map(str, p.seeds[1:]))} (the check)", checked))
        for label, runs in rows:
            sm = summarize(runs, p.game)
            summary.setdefault("probes", []).append({"probe": p.name, "row": label, "seeds": [r["seed"] for r in runs],
                                                     "updates": runs[0]["updates"] if runs else None, "summary": sm})
            if sm is None:
                lines.append(f"| {label} | not run | | | | | | |")
                continue
            b = behaviour.get(p.game)
            se = sm["se_seeds"] if sm["seeds"] > 1 else sm["se_episodes"]
            lines.append(f"| {label} | {runs[0]['updates']:,} | {fmt(sm['mean'])} +/- {fmt(se)} | ({fmt(sm['se_episodes'])}) "
                         f"| {verdict(sm, b) if b else 'n/a'} | {curve_text(runs, p.game) or 'n/a'} | {value_cell(sm)} "
                         f"| {policy_cell(runs, p.game)} |")
    return lines


def _plot_lines(bench, results, behaviour, tables, plots: Path, rel, summary: dict[str, Any]) -> list[str]:
    suite, games = bench.suite, list(bench.suite.games)
    colors = {m.name: f"C{i}" for i, m in enumerate(suite.methods)}
    lines = ["## Plots", ""]
    for budget, title, by_method in tables:
        tag, at = (f"-{budget}", f" At {title}.") if budget else ("", f" At {title}." if len(tables) > 1 else "")
        fig = Figure(figsize=(4.2 * len(games), 3.4), layout="constrained")
        FigureCanvasAgg(fig)
        for i, game in enumerate(games):
            ax = fig.add_subplot(1, len(games), i + 1)
            for m in suite.methods:
                draw_curve(ax, mean_curve(by_method[m.name], f"eval_return/{game}"), colors[m.name], m.label)
            if game in behaviour:
                ax.axhline(behaviour[game]["mean"], color="k", linestyle=":", label="behaviour")
            ax.set_title(game)
            ax.set_xlabel("update")
            ax.set_ylabel("evaluation return")
        path = save_figure(fig, plots / f"curves{tag}.png", legend_size=7)
        summary.setdefault("plots", []).append(rel(path))
        lines += [f"Evaluation return during training, mean over seeds +/- SE (dotted: the behaviour policy).{at}", "",
                  f"![learning curves]({rel(path)})", ""]

        fig = Figure(figsize=(4.2 * len(games), 3.4), layout="constrained")
        FigureCanvasAgg(fig)
        for i, game in enumerate(games):
            ax = fig.add_subplot(1, len(games), i + 1)
            for m in suite.methods:
                if not m.values:
                    continue
                q = mean_curve(by_method[m.name], f"eval_q_start/{game}")
                g = mean_curve(by_method[m.name], f"eval_discounted_return/{game}")
                if q is not None:
                    ax.plot(q[0], q[1], color=colors[m.name], label=f"{m.label}: thinks")
                if g is not None:
                    ax.plot(g[0], g[1], color=colors[m.name], linestyle="--", label=f"{m.label}: gets")
            if game in behaviour and behaviour[game].get("discounted_mean") is not None:
                ax.axhline(behaviour[game]["discounted_mean"], color="k", linestyle=":", label="behaviour gets")
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set_title(game)
            ax.set_xlabel("update")
            ax.set_ylabel("discounted return of clipped rewards")
        path = save_figure(fig, plots / f"values{tag}.png", legend_size=6)
        summary["plots"].append(rel(path))
        lines += ["What each value-learning method *thinks* it gets (solid: mean max_a Q(s0, a) over the data's episode-start "
                  "states; V(s0) for IQL) against what its greedy policy *gets* (dashed: the discounted return of clipped "
                  f"rewards from the start of its evaluation episodes, the quantity Q(s0) estimates); symlog scale. "
                  f"Over-estimation shows as solid far above dashed.{at}", "", f"![values]({rel(path)})", ""]

    game = suite.finetune_game
    fig = Figure(figsize=(5, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, start in enumerate(("pretrained", "scratch")):
        draw_curve(ax, mean_curve([r for r in results.values() if r["kind"] == "finetune" and r.get("start") == start],
                         f"eval_return/{game}"), f"C{i}", start)
    ax.set_title(f"fine-tuning on {game}")
    ax.set_xlabel("update")
    ax.set_ylabel("evaluation return")
    path = save_figure(fig, plots / "finetune.png", legend_size=7)
    summary["plots"].append(rel(path))
    lines += [f"Fine-tuning on {game}: pretrained against scratch, mean over seeds +/- SE.", "", f"![fine-tuning]({rel(path)})"]
    return lines
