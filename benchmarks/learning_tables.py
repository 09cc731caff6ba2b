"""The tables and curves of the learning benchmark's report, one function per section: the cells
shared by every table (a curve, the greedy policy, the values, the speed), the mixed-quality
regime, the transfer experiment, the levers, the reference implementation and fine-tuning.
:func:`benchmarks.learning_report.write_report` puts them together; nothing here runs a job or
edits a number.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.learning_suites import METHODS_BY_NAME, PEER_METHOD, slug as game_slug
from scaled_ql.eval.scores import stratified_bootstrap_ci
from scaled_ql.games import human_normalized_score
from scaled_ql.losses.algorithms import BehaviourCloning


def _se(values: list[float]) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def se_from_std(std: float, n: int) -> float:
    """Standard error of a mean of ``n`` values from their population standard deviation (ddof 0,
    as the evaluator and the dataset card store it): the sample one (ddof 1) over sqrt(n)."""
    return std / math.sqrt(n - 1) if n > 1 else float("nan")


def fmt(x: float | None, digits: int = 1) -> str:
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
    if math.isnan(noise) or not math.isfinite(gap):
        return "n/a"
    return "**better**" if gap > noise else ("worse" if gap < -noise else "within noise")


def verdict(method: dict[str, Any], behaviour: dict[str, Any]) -> str:
    """Better / worse than the behaviour policy when the gap exceeds twice the combined standard
    error (seeds for the method, episodes for the behaviour policy), else within noise."""
    se = se_from_std(behaviour["std"], behaviour["episodes"])
    return compare(method, {"mean": behaviour["mean"], "se_seeds": float("nan"), "se_episodes": se})


def curve_text(runs: list[dict[str, Any]], game: str) -> str:
    """The mean evaluation return at each evaluation, e.g. ``4k: 1.4, 8k: 3.6`` ('' when none)."""
    curve = mean_curve(runs, f"eval_return/{game}")
    return ", ".join(f"{step / 1000:g}k: {ret:.1f}" for step, ret in zip(*curve[:2])) if curve else ""


def policy_cell(runs: list[dict[str, Any]], game: str) -> str:
    """Top action share (agreement with the data's action), mean over the runs that recorded it."""
    pol = [r["policy"][game] for r in runs if "policy" in r]
    return f"{np.mean([x['top_share'] for x in pol]):.2f} ({np.mean([x['agreement'] for x in pol]):.2f})" if pol else "n/a"


def value_cell(sm: dict[str, Any]) -> str:
    """Start value the network believes / the discounted return it gets, means over seeds."""
    thinks = [q for q in sm["q_start"] if q is not None]
    return f"{np.mean(thinks):.2f} / {np.mean([d for d in sm['discounted'] if d is not None]):.2f}" if thinks else "n/a"


def _speed_cell(runs: list[dict[str, Any]]) -> str:
    """Median training updates/s over the runs that recorded it."""
    speed = [r["updates_per_s"] for r in runs if r.get("updates_per_s")]
    return fmt(float(np.median(speed))) if speed else "n/a"


def mixed_lines(bench, results: dict[str, dict[str, Any]], summary: dict[str, Any]) -> list[str]:
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
        table = summary.setdefault("mixed", {})[game] = {"parts_alone": parts.get(game, {}), "data_parts": ep, "methods": {}}
        lines += [f"### {game} (mixed quality)", "", "| policy | return | (SE) | versus the data | versus BC |", "|---|---:|---:|---|---|"]
        for kind, label in (("scripted", "scripted controller alone"), ("poor", "poor controller alone")):
            b = parts.get(game, {}).get(kind)
            if b:
                lines.append(f"| {label} (epsilon {b['epsilon']}, {b['episodes']} evaluation episodes) | {fmt(b['mean'])} "
                             f"| ({fmt(se_from_std(b['std'], b['episodes']))}) | | |")
        for kind in ("scripted", "poor"):
            e = ep.get(kind, {})
            if e.get("episodes"):
                lines.append(f"| the data's {kind} part ({e['envs']} of {data['collection']['num_envs']} environments, "
                             f"{e['episodes']} episodes) | {fmt(e['return_mean'])} | ({fmt(se_from_std(e['return_std'], e['episodes']))}) | | |")
        if "return_mean" not in g:
            continue
        the_data = table["data"] = {"mean": g["return_mean"], "se_seeds": float("nan"),
                                    "se_episodes": se_from_std(g["return_std"], g["episodes"]), "episodes": g["episodes"]}
        lines.append(f"| **the data** (all {g['episodes']} episodes) | {fmt(g['return_mean'])} | ({fmt(the_data['se_episodes'])}) | | |")
        sums = {m: summarize([r for r in results.values() if r["kind"] == "mixed" and r["method"] == m and not r.get("variant")], game)
                for m in suite.mixed_methods}
        # The imitation baseline of the "versus BC" column: the method whose algorithm is behaviour cloning.
        imitation = next((m for m in suite.mixed_methods if bench.methods[m].algorithm is BehaviourCloning), None)
        for m in suite.mixed_methods:
            sm = table["methods"][m] = sums[m]
            if sm is None:
                lines.append(f"| {bench.methods[m].label} | not run | | | |")
                continue
            bc = sums.get(imitation) if imitation is not None else None
            sm["versus_data"] = compare(sm, the_data).strip("*")
            sm["versus_bc"] = compare(sm, bc).strip("*") if bc is not None and m != imitation else None
            lines.append(f"| {bench.methods[m].label} ({sm['seeds']} seeds: {', '.join(fmt(x) for x in sm['per_seed'])}) "
                         f"| {fmt(sm['mean'])} | ({fmt(sm['se_seeds'] if sm['seeds'] > 1 else sm['se_episodes'])}) "
                         f"| {compare(sm, the_data)} | {compare(sm, bc) if bc is not None and m != imitation else ''} |")
        lines += _mixed_variant_rows(bench, results, game, the_data, sums.get(imitation) if imitation else None, table)
        lines.append("")
    return lines


def _mixed_variant_rows(bench, results, game: str, the_data: dict[str, Any], bc: dict[str, Any] | None,
                        table: dict[str, Any]) -> list[str]:
    """The settings tried beyond the regime's own: a row for the seed each was tried on and one for
    the seeds that check it, each against the data and against BC (BC's own seeds: it does not
    depend on a Q-learner's settings)."""
    lines = []
    for variant, label, name, extra, seeds in bench.suite.mixed_variants:
        runs = [r for r in results.values() if r["kind"] == "mixed" and r.get("variant") == variant and r["method"] == name]
        for part, chosen in (("tried", seeds[:1]), ("check", seeds[1:])):
            if not chosen:
                continue
            row = (f"{bench.methods[name].label}, {label} (`{' '.join(extra)}`), "
                   + (f"seed {chosen[0]} (where it was tried)" if part == "tried" else "the check"))
            sm = summarize([r for r in runs if r["seed"] in chosen], game)
            table.setdefault("variants", {}).setdefault(f"{variant}/{name}", {})[part] = sm
            if sm is None:
                lines.append(f"| {row} | not run | | | |")
                continue
            sm["versus_data"] = compare(sm, the_data).strip("*")
            sm["versus_bc"] = compare(sm, bc).strip("*") if bc is not None else None
            per_seed = f" ({sm['seeds']} seeds: {', '.join(fmt(x) for x in sm['per_seed'])})" if sm["seeds"] > 1 else ""
            curve = curve_text([r for r in runs if r["seed"] in chosen], game)
            # One seed: the verdict knows only its episodes' spread, not what another seed would change.
            one = " (1 seed)" if sm["seeds"] == 1 else ""
            lines.append(f"| {row}{per_seed}{f'; at each evaluation: {curve}' if curve else ''} | {fmt(sm['mean'])} "
                         f"| ({fmt(sm['se_seeds'] if sm['seeds'] > 1 else sm['se_episodes'])}) | {compare(sm, the_data)}{one} "
                         f"| {compare(sm, bc) + one if bc is not None else ''} |")
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


def transfer_lines(bench, results: dict[str, dict[str, Any]], plots: Path, rel, summary: dict[str, Any]) -> list[str]:
    """Pretrained against scratch per target and mode: final return, and the area under the
    return curve with 95% bootstrap intervals over seeds; one plot with the mean curves."""
    t = bench.suite.transfer
    pre = results.get("transfer/pretrain")
    lines = ["## Transfer, the Scaled QL way: does pretraining help a new variant and a new game?", "",
             f"A {METHODS_BY_NAME[t.method].label} network pretrained on "
             f"{', '.join(t.pretrain_games)} (`{' '.join(t.pretrain)}`, seed {t.seeds[0]}"
             + ("; its final returns: " + ", ".join(f"{g} {fmt(v['mean'])}" for g, v in pre["final"].items()) if pre else "; not run yet")
             + f") is fine-tuned to each target from a small dataset of it (`{' '.join(t.target_data)}`), offline and online, "
             f"against the same network trained from scratch on the same data and budget (`{' '.join(t.finetune)}`), seeds "
             f"{', '.join(map(str, t.seeds))}. AUC: the evaluation return averaged over fine-tuning from its first "
             "evaluation to its last (area under the curve over the updates it spans; runs are not evaluated before "
             "their first update); in brackets its 95% percentile-bootstrap interval over seeds. Pretraining helps "
             "where the intervals do not overlap; AUCs are compared only between runs evaluated over the same span.", "",
             "| target | mode | start | final return (per seed) | AUC [95% CI] | intervals |", "|---|---|---|---|---|---|"]
    panels = []
    for label, game in t.targets:
        b = (results.get(f"data/transfer-{game_slug(game)}") or {}).get("behaviour", {}).get(game)
        summary.setdefault("transfer_behaviour", {})[game] = b
        if b:  # what the small dataset's own policy scores, under the same evaluation
            lines.append(f"| {label} ({game}) | the data's behaviour policy (epsilon {b['epsilon']}) | | {fmt(b['mean'])} "
                         f"({b['episodes']} episodes) | | |")
        zero = (results.get(f"transfer/{game_slug(game)}/zero-shot") or {}).get("final", {}).get(game)
        summary.setdefault("transfer_zero_shot", {})[game] = zero
        if zero:  # the pretrained network as it is, its game's head playing the variant: where fine-tuning starts
            lines.append(f"| {label} ({game}) | before fine-tuning (zero-shot, {zero.get('head') or 'its own'} head) | pretrained "
                         f"| {fmt(zero['mean'])} ({zero['episodes']} episodes) | | |")
        for mode, mode_label, _ in t.modes:
            runs = {start: [r for r in results.values() if r["kind"] == "transfer" and r["games"] == [game]
                            and r["mode"] == mode and r["start"] == start] for start in ("pretrained", "scratch")}
            aucs, cis = {}, {}
            for start, rs in runs.items():
                aucs[start] = [a for r in rs if (a := area_under_curve(r["curves"].get(f"eval_return/{game}", []))) is not None]
                cis[start] = _interval(aucs[start])
            spans = {(c[0][0], c[-1][0]) for rs in runs.values() for r in rs if (c := r["curves"].get(f"eval_return/{game}"))}
            apart = ("n/a: evaluation spans differ" if len(spans) > 1 else
                     "n/a" if cis["pretrained"] is None or cis["scratch"] is None else
                     "pretrained higher" if cis["pretrained"][0] > cis["scratch"][1] else
                     "scratch higher" if cis["scratch"][0] > cis["pretrained"][1] else "overlap")
            for start, rs in runs.items():
                sm = summarize(rs, game)
                summary.setdefault("transfer", []).append(
                    {"target": label, "game": game, "mode": mode, "start": start, "summary": sm, "auc_per_seed": aucs[start],
                     "auc": float(np.mean(aucs[start])) if aucs[start] else None, "auc_ci": cis[start], "intervals": apart})
                if sm is None:
                    lines.append(f"| {label} ({game}) | {mode_label} | {start} | not run | | |")
                    continue
                ci = cis[start]
                auc = f"{fmt(float(np.mean(aucs[start])))}" + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
                lines.append(f"| {label} ({game}) | {mode_label} | {start} | {fmt(sm['mean'])} "
                             f"({', '.join(fmt(x) for x in sm['per_seed'])}) | {auc} | {apart if start == 'pretrained' else ''} |")
            panels.append((f"{game}, {mode_label}", game, runs))
    if any(rs for _, _, runs in panels for rs in runs.values()):
        fig = Figure(figsize=(3.6 * len(t.modes), 3.0 * len(t.targets)), layout="constrained")
        FigureCanvasAgg(fig)
        for i, (title, game, runs) in enumerate(panels):
            ax = fig.add_subplot(len(t.targets), len(t.modes), i + 1)
            for start, color in (("pretrained", "C0"), ("scratch", "C1")):
                curve = mean_curve(runs[start], f"eval_return/{game}")
                if curve is not None:  # +/- 1.96 standard errors over seeds (with 3 seeds, narrower than a 95% interval)
                    steps, mean, se = curve
                    ax.plot(steps, mean, color=color, label=start)
                    ax.fill_between(steps, mean - 1.96 * se, mean + 1.96 * se, color=color, alpha=0.2)
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("fine-tuning updates", fontsize=7)
            ax.set_ylabel("return", fontsize=7)
        path = save_figure(fig, plots / "transfer.png", legend_size=7)
        summary.setdefault("plots", []).append(rel(path))
        lines += ["", "Return during fine-tuning, mean over seeds with a band of +/- 1.96 standard errors.", "",
                  f"![transfer]({rel(path)})"]
    return lines


def reads_screen_at(curve: list[list[float]], target: float) -> int | None:
    """The first evaluation (in updates) whose return reaches ``target``; None if none did."""
    return next((int(step) for step, ret in curve if ret >= target), None)


def lever_lines(bench, results: dict[str, dict[str, Any]], behaviour: dict[str, Any], summary: dict[str, Any]) -> list[str]:
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
                  f"evaluation whose return reaches half the behaviour policy's ({fmt(half)} of {fmt(b['mean']) if b else 'n/a'}); "
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
        table = summary.setdefault("levers", {})[name] = []
        for change, runs in rows:
            sm = summarize(runs, game)
            row = {"change": change, "seeds": [r["seed"] for r in runs], "summary": sm}
            table.append(row)
            if sm is None:
                lines.append(f"| {change} | | not run | | | | | | |")
                continue
            curve = mean_curve(runs, f"eval_return/{game}")
            points = [[s, r] for s, r in zip(*curve[:2])] if curve else []
            at = reads_screen_at(points, half) if half is not None else None
            row.update(curve=points, reads_screen_at=at, half_behaviour=half)
            lines.append(f"| {change} | {', '.join(str(r['seed']) for r in runs)} | {curve_text(runs, game) or 'n/a'} "
                         f"| {f'{at:,}' if at is not None else 'not within the run'} | {fmt(sm['mean'])} "
                         f"| {policy_cell(runs, game)} | {value_cell(sm)} "
                         f"| {np.mean([r['wall_s'] for r in runs]) / 60:.0f} | {_speed_cell(runs)} |")
        lines.append("")
    return lines


def peer_lines(bench, results: dict[str, dict[str, Any]], behaviour: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """d3rlpy's DiscreteCQL against ours on the same data, network, optimizer and budget."""
    suite = bench.suite
    game = suite.single_game
    lines = [f"## A reference implementation on the same data: d3rlpy's DiscreteCQL, {game}", "",
             f"d3rlpy's `DiscreteCQL` (`benchmarks/learning_peer.py`) trained on the {game} episodes of the same dataset "
             "(exported to its `MDPDataset`, 4-frame stacks by its `FrameStackTransitionPicker`), with the same Nature CNN, "
             "batch, learning rate, Adam epsilon, gradient clipping, target update period, gamma, CQL alpha, reward "
             "clipping and number of updates, evaluated by our evaluator under our protocol; ours is the same CQL run "
             f"(`{' '.join(PEER_METHOD.overrides)} {' '.join(suite.peer)}`). 1-step returns for both: d3rlpy's "
             "DiscreteCQL has no n-step option. Updates/s: training only, without the evaluations, on this machine.", "",
             "| implementation | updates | return | (SE episodes) | per seed | versus behaviour | return at each evaluation (mean over seeds) | updates/s |",
             "|---|---:|---:|---:|---|---|---|---:|"]
    for slug, setting, extra in (("", "", ()), *suite.peer_variants):
        for impl, label in (("d3rlpy", "d3rlpy 2.x DiscreteCQL"), ("ours", "scaled_ql CQL")):
            runs = [r for r in results.values() if r["kind"] == "peer" and r.get("implementation") == impl
                    and r.get("variant", "") == slug]
            sm = summarize(runs, game)
            version = next((r["peer"]["version"] for r in runs if "peer" in r), None)
            summary.setdefault("peer", {})[f"{slug}/{impl}" if slug else impl] = sm and {**sm, "updates": runs[0]["updates"],
                                                                                         "version": version}
            label = f"{label}{f' {version}' if version else ''}" + (f", {setting} (`{' '.join(extra)}`)" if slug else "")
            if sm is None:
                lines.append(f"| {label} | not run | | | | | | |")
                continue
            b = behaviour.get(game)
            lines.append(f"| {label} | {runs[0]['updates']:,} | {fmt(sm['mean'])} +/- {fmt(sm['se_seeds'])} "
                         f"| ({fmt(sm['se_episodes'])}) | {', '.join(fmt(x) for x in sm['per_seed'])} | {verdict(sm, b) if b else 'n/a'} "
                         f"| {curve_text(runs, game) or 'n/a'} | {_speed_cell(runs)} |")
    return lines


def finetune_lines(bench, results: dict[str, dict[str, Any]], summary: dict[str, Any]) -> list[str]:
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
        lines.append(f"| behaviour (the small dataset's policy) | {fmt(b['mean'])} | | {b['episodes']} episodes | {fmt(b['human_normalized'], 3)} |")
    for start in ("pretrained", "scratch"):
        runs = [r for r in results.values() if r["kind"] == "finetune" and r.get("start") == start]
        sm = summary.setdefault("finetune", {})[start] = summarize(runs, game)
        if sm is None:
            lines.append(f"| {start} | not run | | | |")
        else:
            lines.append(f"| {start} | {fmt(sm['mean'])} +/- {fmt(sm['se_seeds'])} | ({fmt(sm['se_episodes'])}) "
                         f"| {', '.join(fmt(x) for x in sm['per_seed'])} | {fmt(sm['hns'], 3)} |")
    return lines


def mean_curve(records: list[dict[str, Any]], tag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
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


def draw_curve(ax, curve: tuple[np.ndarray, np.ndarray, np.ndarray] | None, color: str, label: str) -> None:
    """A mean curve with its +/- SE band (nothing when no run logged it)."""
    if curve is not None:
        steps, mean, se = curve
        ax.plot(steps, mean, color=color, label=label)
        ax.fill_between(steps, mean - se, mean + se, color=color, alpha=0.15)


def save_figure(fig, path: Path, legend_size: int) -> Path:
    """Legend on the first panel (when something was drawn), then the PNG."""
    if fig.axes[0].get_legend_handles_labels()[0]:
        fig.axes[0].legend(fontsize=legend_size)
    fig.savefig(path, dpi=90)
    return path
