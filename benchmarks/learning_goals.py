"""The questions the learning benchmark exists to answer, each read off the report's own numbers.

Nothing is measured here: every verdict comes from the summary the tables wrote
(:func:`benchmarks.learning_report.write_report`), so the goals section can never disagree with a
table. A goal has parts (a budget, a setting, a fine-tuning mode); a part that has not run on all
of its seeds is *open*, never counted as met or not met.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks.learning_tables import compare, fmt

HEADLINE = "cql_dr3"  # the method the project is about
IMITATION = "bc"


def goal_lines(bench, summary: dict[str, Any]) -> list[str]:
    """The goals section of ``bench`` (a ``LearningBenchmark``; its seeds are the ones its jobs run)
    as Markdown lines; also stores ``summary["goals"]``."""
    suite, seeds = bench.suite, len(bench.seeds)
    n = len(suite.games)
    need = math.ceil(2 * n / 3)
    goals = [
        (f"CQL + DR3 beats the behaviour policy on at least {need} of {n} games (main tables, {seeds} seeds)",
         _behaviour_parts(suite, summary, need, seeds)),
        (f"On the mixed-quality data, CQL + DR3 beats BC on at least {need} of {n} games",
         _mixed_parts(suite, summary, need, seeds)) if suite.mixed_data else None,
        ("Our CQL learns at least as well as d3rlpy's DiscreteCQL on the same data and budget (final return within noise or better)",
         _peer_parts(suite, summary)) if suite.peer else None,
        ("Pretrained beats scratch on the held-out variant: the 95% intervals of the area under the return curve do not overlap",
         _transfer_parts(suite, summary)) if suite.transfer is not None else None,
    ]
    lines = ["## The benchmark's goals, read off the tables below", "",
             "Each goal's verdict comes from the numbers of the tables (the same comparisons: twice the combined "
             "standard error, or the bootstrap intervals). A part that has not run on all of its seeds is open, and "
             "so is a goal with an open part. "
             "Settings tried on one seed only are not parts: their rows are in the tables.", "",
             "| goal | verdict | the parts |", "|---|---|---|"]
    summary["goals"] = []
    for goal in filter(None, goals):
        text, parts = goal
        verdict = _overall(parts)
        summary["goals"].append({"goal": text, "verdict": verdict, "parts": parts})
        cell = "; ".join(f"{p['where']}: {p['verdict']}" + (f" ({p['detail']})" if p["detail"] else "") for p in parts)
        lines.append(f"| {text} | **{verdict}** | {cell or 'none'} |")
    return lines


def _overall(parts: list[dict[str, Any]]) -> str:
    """met (every part), not met (none), met in k of n; open while any part is open."""
    done = [p for p in parts if p["verdict"] in ("met", "not met")]
    met = [p for p in done if p["verdict"] == "met"]
    if not parts or len(done) < len(parts):
        return f"open: {len(parts) - len(done)} of {len(parts)} parts still to run; met in {len(met)} of the {len(done)} finished"
    return "met" if len(met) == len(done) else "not met" if not met else f"met in {len(met)} of {len(done)}"


def _part(where: str, verdict: str, detail: str = "") -> dict[str, Any]:
    return {"where": where, "verdict": verdict, "detail": detail}


def _behaviour_parts(suite, summary: dict[str, Any], need: int, want: int) -> list[dict[str, Any]]:
    parts = []
    for key, table in summary["tables"].items():
        rows = [table["returns"].get(g, {}).get(HEADLINE) for g in suite.games]
        seeds = min((r["seeds"] for r in rows if r), default=0) if all(rows) else 0
        if seeds < want:
            parts.append(_part(table["label"], "open", f"{seeds} of {want} seeds run"))
            continue
        wins = table["aggregate"][HEADLINE]["beats_behaviour_on"]
        parts.append(_part(table["label"], "met" if len(wins) >= need else "not met",
                           f"better on {', '.join(wins) or 'none'}, {len(wins)} of {len(suite.games)}"))
    return parts


def _mixed_parts(suite, summary: dict[str, Any], need: int, want: int) -> list[dict[str, Any]]:
    mixed = summary.get("mixed", {})
    imitation = [mixed.get(g, {}).get("methods", {}).get(IMITATION) for g in suite.games]
    bc_seeds = min((r["seeds"] for r in imitation if r), default=0) if all(imitation) else 0
    rows = {"the regime's own settings": (lambda g: mixed.get(g, {}).get("methods", {}).get(HEADLINE), want)}
    for slug, label, method, _, seeds in suite.mixed_variants:
        if method == HEADLINE and len(seeds) > 1:  # chosen on its first seed, checked on the others
            rows[f"{label}, the check"] = (lambda g, key=f"{slug}/{method}": (mixed.get(g, {}).get("variants", {})
                                                                                .get(key, {}).get("check")), len(seeds) - 1)
    parts = []
    for where, (row, seeds) in rows.items():
        found = [row(g) for g in suite.games]
        if not all(found) or min(r["seeds"] for r in found) < seeds or bc_seeds < want:
            parts.append(_part(where, "open", "not run on all seeds, its own or BC's"))
            continue
        wins = [g for g, r in zip(suite.games, found) if r["versus_bc"] == "better"]
        parts.append(_part(where, "met" if len(wins) >= need else "not met",
                           f"better than BC on {', '.join(wins) or 'none'}, {len(wins)} of {len(suite.games)}"))
    return parts


def _peer_parts(suite, summary: dict[str, Any]) -> list[dict[str, Any]]:
    peer = summary.get("peer", {})
    parts = []
    for slug, where in (("", "the suite's setting"), *((slug, label) for slug, label, _ in suite.peer_variants)):
        prefix = f"{slug}/" if slug else ""
        ours, theirs = peer.get(f"{prefix}ours"), peer.get(f"{prefix}d3rlpy")
        if not ours or not theirs or min(ours["seeds"], theirs["seeds"]) < len(suite.peer_seeds):
            parts.append(_part(where, "open", "not run on all seeds"))
            continue
        said = compare(ours, theirs).strip("*")
        parts.append(_part(where, "met" if said in ("better", "within noise") else "not met",
                           f"ours {fmt(ours['mean'])}, d3rlpy {fmt(theirs['mean'])}: {said}"))
    return parts


def _transfer_parts(suite, summary: dict[str, Any]) -> list[dict[str, Any]]:
    seeds, modes = len(suite.transfer.seeds), {mode: label for mode, label, _ in suite.transfer.modes}
    rows = [r for r in summary.get("transfer", []) if r["target"] == "held-out variant" and r["start"] == "pretrained"]
    parts = []
    for r in rows:
        scratch = next(s for s in summary["transfer"] if s["game"] == r["game"] and s["mode"] == r["mode"] and s["start"] == "scratch")
        where = f"{r['game']}, {modes.get(r['mode'], r['mode'])}"
        if r["intervals"] == "n/a" or min(len(r["auc_per_seed"]), len(scratch["auc_per_seed"])) < seeds:
            done = min(len(r["auc_per_seed"]), len(scratch["auc_per_seed"]))
            parts.append(_part(where, "open", f"{done} of {seeds} seeds of both starts"))
            continue
        parts.append(_part(where, "met" if r["intervals"] == "pretrained higher" else "not met",
                           f"AUC pretrained {fmt(r['auc'])}, scratch {fmt(scratch['auc'])}: {r['intervals']}"))
    return parts
