"""``docs/RESULTS.md`` and its plots, written from the results folder of ``scaled-ql bench learning``.

Nothing here runs a job or edits a number: every table cell and every plot comes from the JSON
files the jobs left (:class:`scaled_ql.learning_bench.LearningBenchmark`). Uncertainty is
reported two ways: the standard error over seeds (of each seed's mean evaluation return; what
another seed would change) and the standard error over all evaluation episodes pooled; the IQM of
human-normalized scores carries a stratified-bootstrap 95% interval over seeds (rliable's
definition, ``scaled_ql.eval.scores``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.learning_suites import METHODS_BY_NAME, PEER_METHOD
from scaled_ql.eval.scores import iqm, stratified_bootstrap_ci
from scaled_ql.games import human_normalized_score
from scaled_ql.losses.algorithms import BehaviourCloning


def _se(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def _fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def summarize(records: list[dict[str, Any]], game: str) -> dict[str, Any] | None:
    """One method's evaluation of ``game`` over its seeds: means, standard errors, HNS."""
    per_seed = [r["final"][game] for r in records if game in r.get("final", {})]
    if not per_seed:
        return None
    means = [p["mean"] for p in per_seed]
    episodes = [x for p in per_seed for x in p["returns"]]
    mean = float(np.mean(means))
    return {"mean": mean, "se_seeds": _se(means), "se_episodes": _se(episodes), "seeds": len(means),
            "per_seed": means, "hns": human_normalized_score(game, mean),
            "q_start": [p.get("q_start") for p in per_seed], "discounted": [p.get("discounted_mean") for p in per_seed]}


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``a`` better / worse than ``b`` when the gap of their means exceeds twice the combined
    standard error (over seeds where there are several, else over episodes)."""
    se = [x["se_seeds"] if not math.isnan(x["se_seeds"]) else x["se_episodes"] for x in (a, b)]
    gap, noise = a["mean"] - b["mean"], 2 * math.hypot(*se)
    if math.isnan(noise):
        return "n/a"
    return "**better**" if gap > noise else ("worse" if gap < -noise else "within noise")


def verdict(method: dict[str, Any], behaviour: dict[str, Any]) -> str:
    """Better / worse than the behaviour policy when the gap exceeds twice the combined standard
    error (seeds for the method, episodes for the behaviour policy), else within noise."""
    se = behaviour["std"] / math.sqrt(max(behaviour["episodes"], 1))
    return compare(method, {"mean": behaviour["mean"], "se_seeds": float("nan"), "se_episodes": se})


def _curve_text(runs: list[dict[str, Any]], game: str) -> str:
    """The mean evaluation return at each evaluation, e.g. ``4k: 1.4, 8k: 3.6`` ('' when none)."""
    curve = _curve(runs, f"eval_return/{game}")
    return ", ".join(f"{step / 1000:g}k: {ret:.1f}" for step, ret in zip(*curve[:2])) if curve else ""


def _policy_cell(runs: list[dict[str, Any]], game: str) -> str:
    """Top action share (agreement with the data's action), mean over the runs that recorded it."""
    pol = [r["policy"][game] for r in runs if "policy" in r]
    return f"{np.mean([x['top_share'] for x in pol]):.2f} ({np.mean([x['agreement'] for x in pol]):.2f})" if pol else "n/a"


def _value_cell(sm: dict[str, Any]) -> str:
    """Start value the network believes / the discounted return it gets, means over seeds."""
    thinks = [q for q in sm["q_start"] if q is not None]
    return f"{np.mean(thinks):.2f} / {np.mean([d for d in sm['discounted'] if d is not None]):.2f}" if thinks else "n/a"


def _speed_cell(runs: list[dict[str, Any]]) -> str:
    """Median training updates/s over the runs that recorded it."""
    speed = [r["updates_per_s"] for r in runs if r.get("updates_per_s")]
    return _fmt(float(np.median(speed))) if speed else "n/a"


def write_report(bench, out: str | Path, plots_dir: str | Path | None = None) -> Path:
    """Write the report of ``bench`` (a ``LearningBenchmark``) to ``out`` and its PNGs to
    ``plots_dir`` (default: the results folder), linked relative to ``out``."""
    suite, results = bench.suite, bench.load_results()
    out = Path(out)
    plots = Path(plots_dir) if plots_dir is not None else bench.results
    plots.mkdir(parents=True, exist_ok=True)
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731
    games = list(suite.games)
    data = results.get("data/main")
    behaviour = data["behaviour"] if data else {}
    by_method: dict[str, list[dict[str, Any]]] = {m.name: [] for m in suite.methods}
    for r in results.values():
        if r["kind"] == "multi":
            by_method[r["method"]].append(r)
    missing = [j.id for j in bench.jobs if j.id not in results]
    walls = [r.get("wall_s", 0.0) for r in results.values()]
    commits = sorted({r.get("commit", "unknown") for r in results.values()})
    machines = sorted({r.get("machine", "?") for r in results.values()})

    lines = [
        f"# Learning results: suite `{suite.name}`",
        "",
        f"Produced by `scaled-ql bench learning --suite {suite.name}` from the job results in "
        f"`{rel(bench.results)}/`; do not edit by hand (rerun with `--report-only`).",
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

    lines += ["", "## Returns per game (multi-game runs: one network, a head per game)", "",
              "Return: mean over seeds of each seed's mean evaluation return, +/- the standard error over seeds; "
              "in brackets the standard error over all evaluation episodes pooled. HNS: human-normalized score of "
              "the mean. Versus behaviour: better or worse when the gap exceeds twice the combined standard error.", ""]
    summaries: dict[str, dict[str, Any]] = {}
    for game in games:
        b = behaviour.get(game)
        lines += [f"### {game}", "", "| policy | return | (SE episodes) | seeds | HNS | versus behaviour |", "|---|---:|---:|---:|---:|---|"]
        if b:
            lines.append(f"| behaviour (scripted, epsilon {b['epsilon']}) | {_fmt(b['mean'])} +/- {_fmt(b['std'] / math.sqrt(b['episodes']))} "
                         f"| | {b['episodes']} episodes | {_fmt(b['human_normalized'], 3)} | |")
        for m in suite.methods:
            sm = summarize(by_method[m.name], game)
            if sm is None:
                lines.append(f"| {m.label} | not run | | | | |")
                continue
            summaries[f"{m.name}/{game}"] = sm
            lines.append(f"| {m.label} | {_fmt(sm['mean'])} +/- {_fmt(sm['se_seeds'])} | ({_fmt(sm['se_episodes'])}) | {sm['seeds']} "
                         f"| {_fmt(sm['hns'], 3)} | {verdict(sm, b) if b else 'n/a'} |")
        if game == suite.single_game:
            for name in suite.single_methods:
                runs = [r for r in results.values() if r["kind"] == "single" and r["method"] == name]
                sm = summarize(runs, game)
                label = f"{bench.methods[name].label}, single-game run"
                if sm is None:
                    lines.append(f"| {label} | not run | | | | |")
                else:
                    lines.append(f"| {label} | {_fmt(sm['mean'])} +/- {_fmt(sm['se_seeds'])} | ({_fmt(sm['se_episodes'])}) "
                                 f"| {sm['seeds']} | {_fmt(sm['hns'], 3)} | {verdict(sm, b) if b else 'n/a'} |")
        lines.append("")

    lines += ["## Aggregate over games", "", "IQM of human-normalized scores over (seed, game) pairs, with a stratified-bootstrap "
              "95% interval resampling seeds within each game (2,000 replicates).", "",
              "| method | IQM HNS | 95% CI | mean HNS | beats behaviour on |", "|---|---:|---|---:|---|"]
    for m in suite.methods:
        matrix = _hns_matrix(by_method[m.name], games)
        if matrix is None:
            lines.append(f"| {m.label} | not run | | | |")
            continue
        lo, hi = stratified_bootstrap_ci(matrix, iqm, reps=2000, seed=0)
        wins = [g for g in games if f"{m.name}/{g}" in summaries and g in behaviour
                and verdict(summaries[f"{m.name}/{g}"], behaviour[g]) == "**better**"]
        lines.append(f"| {m.label} | {_fmt(float(iqm(matrix)), 3)} | [{_fmt(lo, 3)}, {_fmt(hi, 3)}] | {_fmt(float(matrix.mean()), 3)} "
                     f"| {', '.join(wins) or 'none'} ({len(wins)} of {len(games)}) |")
    if behaviour:
        bm = np.array([[human_normalized_score(g, behaviour[g]["mean"]) for g in games]], dtype=float)
        lines.append(f"| behaviour | {_fmt(float(iqm(bm)), 3)} | | {_fmt(float(bm.mean()), 3)} | |")

    lines += ["", *_policy_lines(suite, games, by_method), ""]
    lines += ["", *_finetune_lines(bench, results), ""]
    if suite.mixed_data:
        lines += [*_mixed_lines(bench, results), ""]
    if suite.transfer is not None:
        lines += [*_transfer_lines(bench, results, plots, rel), ""]
    if suite.peer:
        lines += [*_peer_lines(bench, results, behaviour), ""]
    if any(p.group for p in suite.probes):
        lines += [*_lever_lines(bench, results, behaviour), ""]
    if any(not p.group for p in suite.probes):
        lines += [*_probe_lines(bench, results, behaviour), ""]
    lines += _plot_lines(bench, results, behaviour, by_method, plots, rel)
    notes = bench.results / "NOTES.md"
    if notes.is_file():
        lines += ["", "## Authors' reading of these numbers", "", f"(From `{rel(notes)}`, written by hand after the runs.)", "",
                  notes.read_text().strip()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


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


def _policy_lines(suite, games: list[str], by_method: dict[str, list[dict[str, Any]]]) -> list[str]:
    """How state-dependent each method's greedy policy is, on the data's own states."""
    lines = ["## What the greedy policies do on the data's states", "",
             "Share of the most frequent greedy action over 256 training states per game (1.00: the same action "
             "everywhere, the policy ignores the screen), and in brackets how often it is the data's action; mean "
             "over the seeds whose results record it (for runs finished before the benchmark measured this, "
             "computed afterwards from the run's final checkpoint by the same command).", "", "| method | seeds | " + " | ".join(games) + " |",
             "|---|---:|" + "---:|" * len(games)]
    for m in suite.methods:
        runs = [r for r in by_method[m.name] if "policy" in r]
        if not runs:
            lines.append(f"| {m.label} | 0 | " + " | ".join("n/a" for _ in games) + " |")
            continue
        cells = []
        for g in games:
            top = np.mean([r["policy"][g]["top_share"] for r in runs])
            agree = np.mean([r["policy"][g]["agreement"] for r in runs])
            cells.append(f"{top:.2f} ({agree:.2f})")
        lines.append(f"| {m.label} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def _probe_lines(bench, results: dict[str, dict[str, Any]], behaviour: dict[str, Any]) -> list[str]:
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
        base = [r for r in results.values() if r["kind"] == "single" and r["method"] == p.method and p.game in r["final"]]
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
            if sm is None:
                lines.append(f"| {label} | not run | | | | | | |")
                continue
            b = behaviour.get(p.game)
            se = sm["se_seeds"] if sm["seeds"] > 1 else sm["se_episodes"]
            lines.append(f"| {label} | {runs[0]['updates']:,} | {_fmt(sm['mean'])} +/- {_fmt(se)} | ({_fmt(sm['se_episodes'])}) "
                         f"| {verdict(sm, b) if b else 'n/a'} | {_curve_text(runs, p.game) or 'n/a'} | {_value_cell(sm)} "
                         f"| {_policy_cell(runs, p.game)} |")
    return lines


def _mixed_lines(bench, results: dict[str, dict[str, Any]]) -> list[str]:
    """The mixed-quality regime: each part of the behaviour alone, the data, and the methods
    against the data and against behaviour cloning."""
    suite = bench.suite
    data = results.get("data/mixed")
    share = next((o.split("=", 1)[1] for o in suite.mixed_data if o.startswith("prep.good_fraction=")), "0.25")
    lines = ["## Mixed-quality data: does offline RL beat imitation?", "",
             f"Dataset: `{' '.join(suite.mixed_data)}` on the same games. Per game, a share {share} of the environments "
             "play the scripted controller and the others a poor "
             "controller that reads the same RAM and does the wrong thing (Pong, Breakout: moves the paddle away from "
             "the ball; Freeway: always DOWN), both with the same share of random actions; so cloning the data's most "
             "frequent action copies the poor controller, and only the rewards tell the two apart. Runs: "
             f"{', '.join(bench.methods[m].label for m in suite.mixed_methods)}, one multi-game network each, seeds "
             f"{', '.join(map(str, bench.seeds))}, the tables' settings with `{' '.join(suite.mixed_common) or 'nothing changed'}`. "
             "The data's return: mean over its own episodes (both parts). Versus: better or worse when the gap exceeds "
             "twice the combined standard error.", ""]
    if data is None:
        return lines + ["Not run yet.", ""]
    parts = data.get("behaviour_parts", {})
    for game in suite.games:
        g = data["games"].get(game, {})
        ep = data["collection"].get("parts", {}).get(game, {})
        lines += [f"### {game} (mixed quality)", "", "| policy | return | (SE) | versus the data | versus BC |", "|---|---:|---:|---|---|"]
        for kind, label in (("scripted", "scripted controller alone"), ("poor", "poor controller alone")):
            b = parts.get(game, {}).get(kind)
            if b:
                lines.append(f"| {label} (epsilon {b['epsilon']}, {b['episodes']} evaluation episodes) | {_fmt(b['mean'])} "
                             f"| ({_fmt(b['std'] / math.sqrt(b['episodes']))}) | | |")
        for kind in ("scripted", "poor"):
            e = ep.get(kind, {})
            if e.get("episodes"):
                lines.append(f"| the data's {kind} part ({e['envs']} of {data['collection']['num_envs']} environments, "
                             f"{e['episodes']} episodes) | {_fmt(e['return_mean'])} | ({_fmt(e['return_std'] / math.sqrt(e['episodes']))}) | | |")
        if "return_mean" not in g:
            continue
        the_data = {"mean": g["return_mean"], "se_seeds": float("nan"), "se_episodes": g["return_std"] / math.sqrt(g["episodes"])}
        lines.append(f"| **the data** (all {g['episodes']} episodes) | {_fmt(g['return_mean'])} | ({_fmt(the_data['se_episodes'])}) | | |")
        sums = {m: summarize([r for r in results.values() if r["kind"] == "mixed" and r["method"] == m], game)
                for m in suite.mixed_methods}
        # The imitation baseline of the "versus BC" column: the method whose algorithm is behaviour cloning.
        imitation = next((m for m in suite.mixed_methods if bench.methods[m].algorithm is BehaviourCloning), None)
        for m in suite.mixed_methods:
            sm = sums[m]
            if sm is None:
                lines.append(f"| {bench.methods[m].label} | not run | | | |")
                continue
            bc = sums.get(imitation) if imitation is not None else None
            lines.append(f"| {bench.methods[m].label} ({sm['seeds']} seeds: {', '.join(_fmt(x) for x in sm['per_seed'])}) "
                         f"| {_fmt(sm['mean'])} | ({_fmt(sm['se_seeds'] if sm['seeds'] > 1 else sm['se_episodes'])}) "
                         f"| {compare(sm, the_data)} | {compare(sm, bc) if bc is not None and m != imitation else ''} |")
        lines.append("")
    return lines


def area_under_curve(points: list[list[float]]) -> float | None:
    """The evaluation return averaged over training: the trapezoid area under the return-vs-updates
    curve divided by the updates it spans (a single point: its value)."""
    if not points:
        return None
    steps, returns = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    if len(points) == 1:
        return float(returns[0])
    return float(np.sum((returns[1:] + returns[:-1]) / 2 * np.diff(steps)) / (steps[-1] - steps[0]))


def _interval(values: list[float]) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the mean over seeds (rliable's resampling of runs)."""
    if len(values) < 2:
        return None
    return stratified_bootstrap_ci(np.array(values)[:, None], lambda x: np.mean(x, axis=(-2, -1)), reps=2000, seed=0)


def _transfer_lines(bench, results: dict[str, dict[str, Any]], plots: Path, rel) -> list[str]:
    """Pretrained against scratch per target and mode: final return, and the area under the
    return curve with 95% bootstrap intervals over seeds; one plot with the mean curves."""
    t = bench.suite.transfer
    pre = results.get("transfer/pretrain")
    lines = ["## Transfer, the Scaled QL way: does pretraining help a new variant and a new game?", "",
             f"A {METHODS_BY_NAME[t.method].label} network pretrained on "
             f"{', '.join(t.pretrain_games)} (`{' '.join(t.pretrain)}`, seed {t.seeds[0]}"
             + ("; its final returns: " + ", ".join(f"{g} {_fmt(v['mean'])}" for g, v in pre["final"].items()) if pre else "; not run yet")
             + f") is fine-tuned to each target from a small dataset of it (`{' '.join(t.target_data)}`), offline and online, "
             f"against the same network trained from scratch on the same data and budget (`{' '.join(t.finetune)}`), seeds "
             f"{', '.join(map(str, t.seeds))}. AUC: the evaluation return averaged over fine-tuning (area under the curve "
             "over the updates it spans); in brackets its 95% percentile-bootstrap interval over seeds. Pretraining "
             "helps where the intervals do not overlap.", "",
             "| target | mode | start | final return (per seed) | AUC [95% CI] | intervals |", "|---|---|---|---|---|---|"]
    panels = []
    for label, game in t.targets:
        for mode, mode_label, _ in t.modes:
            runs = {start: [r for r in results.values() if r["kind"] == "transfer" and r["games"] == [game]
                            and r["mode"] == mode and r["start"] == start] for start in ("pretrained", "scratch")}
            aucs, cis = {}, {}
            for start, rs in runs.items():
                aucs[start] = [a for r in rs if (a := area_under_curve(r["curves"].get(f"eval_return/{game}", []))) is not None]
                cis[start] = _interval(aucs[start])
            apart = ("n/a" if cis["pretrained"] is None or cis["scratch"] is None else
                     "pretrained higher" if cis["pretrained"][0] > cis["scratch"][1] else
                     "scratch higher" if cis["scratch"][0] > cis["pretrained"][1] else "overlap")
            for start, rs in runs.items():
                sm = summarize(rs, game)
                if sm is None:
                    lines.append(f"| {label} ({game}) | {mode_label} | {start} | not run | | |")
                    continue
                ci = cis[start]
                auc = f"{_fmt(float(np.mean(aucs[start])))}" + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")
                lines.append(f"| {label} ({game}) | {mode_label} | {start} | {_fmt(sm['mean'])} "
                             f"({', '.join(_fmt(x) for x in sm['per_seed'])}) | {auc} | {apart if start == 'pretrained' else ''} |")
            panels.append((f"{game}, {mode_label}", game, runs))
    if any(rs for _, _, runs in panels for rs in runs.values()):
        fig = Figure(figsize=(3.6 * len(t.modes), 3.0 * len(t.targets)), layout="constrained")
        FigureCanvasAgg(fig)
        for i, (title, game, runs) in enumerate(panels):
            ax = fig.add_subplot(len(t.targets), len(t.modes), i + 1)
            for start, color in (("pretrained", "C0"), ("scratch", "C1")):
                curve = _curve(runs[start], f"eval_return/{game}")
                if curve is not None:  # a 95% band: 1.96 standard errors over seeds
                    steps, mean, se = curve
                    ax.plot(steps, mean, color=color, label=start)
                    ax.fill_between(steps, mean - 1.96 * se, mean + 1.96 * se, color=color, alpha=0.2)
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("fine-tuning updates", fontsize=7)
            ax.set_ylabel("return", fontsize=7)
        path = _save(fig, plots / "transfer.png", legend_size=7)
        lines += ["", "Return during fine-tuning, mean over seeds with a band of +/- 1.96 standard errors.", "",
                  f"![transfer]({rel(path)})"]
    return lines


def reads_screen_at(curve: list[list[float]], target: float) -> int | None:
    """The first evaluation (in updates) whose return reaches ``target``; None if none did."""
    return next((int(step) for step, ret in curve if ret >= target), None)


def _lever_lines(bench, results: dict[str, dict[str, Any]], behaviour: dict[str, Any]) -> list[str]:
    """Each group of lever probes in one table: the base run of the group first, then one row per
    change, on the seed the levers were tried on (and the others where checked)."""
    lines = []
    groups: dict[str, list] = {}
    for p in bench.suite.probes:
        if p.group:
            groups.setdefault(p.group, []).append(p)
    for name, probes in groups.items():
        game = probes[0].game
        b = behaviour.get(game)
        half = b["mean"] / 2 if b else None
        lines += [f"## Learning faster per CPU hour: the {name}", "",
                  f"Each row changes one setting of the first row ({probes[0].label}, `{' '.join(probes[0].overrides)}`), "
                  f"tried on seed {probes[0].seeds[0]}, which the tables do not use. *Reads the screen at*: the first "
                  f"evaluation whose return reaches half the behaviour policy's ({_fmt(half)} of {_fmt(b['mean']) if b else 'n/a'}); "
                  "before that the greedy policy takes nearly one action everywhere. Minutes: the job's wall time "
                  "(training and evaluations) on this machine, which other work shared at times.", "",
                  "| change | seeds | return at each evaluation (mean over seeds) | reads the screen at | final return | "
                  "top action share (agreement) | start value: thinks / gets | minutes | updates/s |",
                  "|---|---|---|---:|---:|---|---|---:|---:|"]
        rows = []
        for p in probes:
            done = [results[f"probe/{p.name}/seed{s}"] for s in p.seeds if f"probe/{p.name}/seed{s}" in results]
            change = "none (the base)" if p is probes[0] else f"`{' '.join(o for o in p.overrides if o not in probes[0].overrides)}`"
            rows.append((change, [r for r in done if r["seed"] == p.seeds[0]]))
            if len(p.seeds) > 1:  # the check on the seeds it was not chosen on, in a row of its own
                rows.append((f"{change}, the check", [r for r in done if r["seed"] != p.seeds[0]]))
        for change, runs in rows:
            sm = summarize(runs, game)
            if sm is None:
                lines.append(f"| {change} | | not run | | | | | | |")
                continue
            curve = _curve(runs, f"eval_return/{game}")
            points = [[s, r] for s, r in zip(*curve[:2])] if curve else []
            at = reads_screen_at(points, half) if half is not None else None
            lines.append(f"| {change} | {', '.join(str(r['seed']) for r in runs)} | {_curve_text(runs, game) or 'n/a'} "
                         f"| {f'{at:,}' if at is not None else 'not within the run'} | {_fmt(sm['mean'])} "
                         f"| {_policy_cell(runs, game)} | {_value_cell(sm)} "
                         f"| {np.mean([r['wall_s'] for r in runs]) / 60:.0f} | {_speed_cell(runs)} |")
        lines.append("")
    return lines


def _peer_lines(bench, results: dict[str, dict[str, Any]], behaviour: dict[str, Any]) -> list[str]:
    """d3rlpy's DiscreteCQL against ours on the same data, network, optimizer and budget."""
    suite = bench.suite
    game = suite.single_game
    lines = [f"## A reference implementation on the same data: d3rlpy's DiscreteCQL, {game}", "",
             f"d3rlpy's `DiscreteCQL` (`scaled_ql/learning_peer.py`) trained on the {game} episodes of the same dataset "
             "(exported to its `MDPDataset`, 4-frame stacks by its `FrameStackTransitionPicker`), with the same Nature CNN, "
             "batch, learning rate, Adam epsilon, gradient clipping, target update period, gamma, CQL alpha, reward "
             "clipping and number of updates, evaluated by our evaluator under our protocol; ours is the same CQL run "
             f"(`{' '.join(PEER_METHOD.overrides)} {' '.join(suite.peer)}`). 1-step returns for both: d3rlpy's "
             "DiscreteCQL has no n-step option. Updates/s: training only, without the evaluations, on this machine.", "",
             "| implementation | updates | return | (SE episodes) | per seed | versus behaviour | return at each evaluation (mean over seeds) | updates/s |",
             "|---|---:|---:|---:|---|---|---|---:|"]
    for impl, label in (("d3rlpy", "d3rlpy 2.x DiscreteCQL"), ("ours", "scaled_ql CQL")):
        runs = [r for r in results.values() if r["kind"] == "peer" and r.get("implementation") == impl]
        sm = summarize(runs, game)
        if sm is None:
            lines.append(f"| {label} | not run | | | | | | |")
            continue
        b = behaviour.get(game)
        version = next((r["peer"]["version"] for r in runs if "peer" in r), "")
        lines.append(f"| {label}{f' {version}' if version else ''} | {runs[0]['updates']:,} | {_fmt(sm['mean'])} +/- {_fmt(sm['se_seeds'])} "
                     f"| ({_fmt(sm['se_episodes'])}) | {', '.join(_fmt(x) for x in sm['per_seed'])} | {verdict(sm, b) if b else 'n/a'} "
                     f"| {_curve_text(runs, game) or 'n/a'} | {_speed_cell(runs)} |")
    return lines


def _finetune_lines(bench, results: dict[str, dict[str, Any]]) -> list[str]:
    suite = bench.suite
    game = suite.finetune_game
    others = [g for g in suite.games if g != game]
    lines = [f"## Fine-tuning to a held-out game: {game}", "",
             f"A {bench.methods[suite.pretrain_method].label} network pretrained on {', '.join(others)} (the multi-game "
             f"budget, seed {bench.seeds[0]}) fine-tuned on a small {game} dataset (`{' '.join(suite.finetune_data)}`), "
             f"against the same network trained from scratch on the same data and budget (`{' '.join(suite.finetune)}`).", "",
             "| start | return | (SE episodes) | per seed | HNS |", "|---|---:|---:|---|---:|"]
    small = results.get(f"data/finetune-{game}")
    if small and game in small.get("behaviour", {}):
        b = small["behaviour"][game]
        lines.append(f"| behaviour (the small dataset's policy) | {_fmt(b['mean'])} | | {b['episodes']} episodes | {_fmt(b['human_normalized'], 3)} |")
    for start in ("pretrained", "scratch"):
        runs = [r for r in results.values() if r["kind"] == "finetune" and r.get("start") == start]
        sm = summarize(runs, game)
        if sm is None:
            lines.append(f"| {start} | not run | | | |")
        else:
            lines.append(f"| {start} | {_fmt(sm['mean'])} +/- {_fmt(sm['se_seeds'])} | ({_fmt(sm['se_episodes'])}) "
                         f"| {', '.join(_fmt(x) for x in sm['per_seed'])} | {_fmt(sm['hns'], 3)} |")
    return lines


def _curve(records: list[dict[str, Any]], tag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and standard error over runs of a logged series, on the steps all runs share."""
    series = [dict(map(tuple, r["curves"][tag])) for r in records if tag in r.get("curves", {})]
    if not series:
        return None
    steps = sorted(set.intersection(*(set(s) for s in series)))
    if not steps:
        return None
    values = np.array([[s[k] for k in steps] for s in series])
    se = values.std(0, ddof=1) / math.sqrt(len(series)) if len(series) > 1 else np.zeros(len(steps))
    return np.array(steps), values.mean(0), se


def _draw(ax, curve: tuple[np.ndarray, np.ndarray, np.ndarray] | None, color: str, label: str) -> None:
    """A mean curve with its +/- SE band (nothing when no run logged it)."""
    if curve is not None:
        steps, mean, se = curve
        ax.plot(steps, mean, color=color, label=label)
        ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.15)


def _save(fig, path: Path, legend_size: int) -> Path:
    """Legend on the first panel (when something was drawn), then the PNG."""
    if fig.axes[0].get_legend_handles_labels()[0]:
        fig.axes[0].legend(fontsize=legend_size)
    fig.savefig(path, dpi=90)
    return path


def _plot_lines(bench, results, behaviour, by_method, plots: Path, rel) -> list[str]:
    suite, games = bench.suite, list(bench.suite.games)
    colors = {m.name: f"C{i}" for i, m in enumerate(suite.methods)}
    lines = ["## Plots", ""]

    fig = Figure(figsize=(4.2 * len(games), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    for i, game in enumerate(games):
        ax = fig.add_subplot(1, len(games), i + 1)
        for m in suite.methods:
            _draw(ax, _curve(by_method[m.name], f"eval_return/{game}"), colors[m.name], m.label)
        if game in behaviour:
            ax.axhline(behaviour[game]["mean"], color="k", linestyle=":", label="behaviour")
        ax.set_title(game)
        ax.set_xlabel("update")
        ax.set_ylabel("evaluation return")
    path = _save(fig, plots / "curves.png", legend_size=7)
    lines += [f"Evaluation return during training, mean over seeds +/- SE (dotted: the behaviour policy).", "",
              f"![learning curves]({rel(path)})", ""]

    fig = Figure(figsize=(4.2 * len(games), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    for i, game in enumerate(games):
        ax = fig.add_subplot(1, len(games), i + 1)
        for m in suite.methods:
            if not m.values:
                continue
            q = _curve(by_method[m.name], f"eval_q_start/{game}")
            g = _curve(by_method[m.name], f"eval_discounted_return/{game}")
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
    path = _save(fig, plots / "values.png", legend_size=6)
    lines += ["What each value-learning method *thinks* it gets (solid: mean max_a Q(s0, a) over the data's episode-start "
              "states; V(s0) for IQL) against what its greedy policy *gets* (dashed: the discounted return of clipped "
              "rewards from the start of its evaluation episodes, the quantity Q(s0) estimates); symlog scale. "
              "Over-estimation shows as solid far above dashed.", "", f"![values]({rel(path)})", ""]

    game = suite.finetune_game
    fig = Figure(figsize=(5, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, start in enumerate(("pretrained", "scratch")):
        _draw(ax, _curve([r for r in results.values() if r["kind"] == "finetune" and r.get("start") == start],
                         f"eval_return/{game}"), f"C{i}", start)
    ax.set_title(f"fine-tuning on {game}")
    ax.set_xlabel("update")
    ax.set_ylabel("evaluation return")
    path = _save(fig, plots / "finetune.png", legend_size=7)
    lines += [f"Fine-tuning on {game}: pretrained against scratch, mean over seeds +/- SE.", "", f"![fine-tuning]({rel(path)})"]
    return lines
