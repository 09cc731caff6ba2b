"""`scaled-ql bench learning`: the smoke suite runs every job kind for real (scripted data in
ALE, training, evaluation, fine-tuning), is resumable job by job, and writes the report from the
results alone."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from scaled_ql.cli import main
from benchmarks.learning_bench import LearningBenchmark
from benchmarks.learning_goals import _mixed_parts, _overall
from benchmarks.learning_report import summary_path
from benchmarks.learning_suites import SUITES
from benchmarks.learning_tables import compare, se_from_std

pytestmark = [pytest.mark.slow, pytest.mark.ale]


def test_smoke_suite_end_to_end_resumable_and_reported(tmp_path, capsys):
    work, results, out = tmp_path / "work", tmp_path / "results", tmp_path / "docs" / "RESULTS.md"
    args = ["bench", "learning", "--suite", "smoke", "--work", str(work), "--results", str(results), "--out", str(out)]

    # A piece first: one multi-game job pulls in the dataset it needs, nothing else.
    assert main([*args, "--only", "multi/bc/seed1"]) == 0
    assert sorted(p.name for p in results.glob("*.json")) == ["data__main.json", "multi__bc__seed1.json"]
    record = json.loads((results / "multi__bc__seed1.json").read_text())
    assert record["updates"] == 4 and set(record["final"]) == {"Breakout", "Freeway"}
    assert record["commit"] and record["wall_s"] >= 0 and "eval_return/Breakout" in record["curves"]
    policy_record = record["policy"]
    policy = policy_record["Breakout"]
    assert sum(policy["counts"]) == 256 and len(policy["counts"]) == 4 and 0.25 <= policy["top_share"] <= 1.0
    # Beside the actions, each action's mean Q and the median gap between the best two (never negative).
    assert len(policy["q_mean"]) == 4 and all(math.isfinite(q) for q in policy["q_mean"]) and policy["action_gap"] >= 0
    data = json.loads((results / "data__main.json").read_text())
    assert set(data["behaviour"]) == {"Breakout", "Freeway"} and data["behaviour"]["Breakout"]["episodes"] == 2
    summary = json.loads(summary_path(out).read_text())  # the numbers of every table in the report
    assert summary["jobs"]["finished"] == 2 and summary["jobs"]["total"] == 52 and "multi/cql_dr3/seed1" in summary["jobs"]["missing"]
    first = summary["tables"]["first"]
    assert first["returns"]["Breakout"]["cql_dr3"] is None and first["returns"]["Breakout"]["bc"]["seeds"] == 1
    # The goals section is read off the tables: with one job finished, every goal is open.
    assert all(g["verdict"].startswith("open: ") for g in summary["goals"]) and len(summary["goals"]) == 4
    assert out.read_text().index("## The benchmark's goals") < out.read_text().index("## Setup")

    # The rest: finished jobs are not run again (their files keep their timestamps).
    before = (results / "multi__bc__seed1.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (results / "multi__bc__seed1.json").stat().st_mtime_ns == before
    bench = LearningBenchmark("smoke", work, results)
    assert set(bench.load_results()) == {j.id for j in bench.jobs}
    pretrained = json.loads((results / "finetune__pretrained__seed1.json").read_text())
    assert pretrained["config"]["finetune"]["init"].endswith("pretrain-Breakout")
    assert json.loads((results / "finetune__scratch__seed1.json").read_text())["config"]["finetune"]["init"] == ""
    single = json.loads((results / "single__Breakout__cql_dr3__seed1.json").read_text())
    assert single["config"]["games"] == ["Breakout"] and single["config"]["train"]["batch_size"] == 2

    probe = json.loads((results / "probe__Breakout-cql_dr3-2x__seed0.json").read_text())
    assert probe["updates"] == 8 and probe["seed"] == 0 and probe["config"]["games"] == ["Breakout"]
    assert probe["config"]["train"]["batch_size"] == 2 and probe["config"]["loss"]["dr3_coef"] == 0.03

    peer = json.loads((results / "peer__d3rlpy__seed1.json").read_text())
    ours = json.loads((results / "peer__ours__seed1.json").read_text())
    assert peer["peer"]["library"] == "d3rlpy" and peer["updates"] == ours["updates"] == 4
    assert peer["config"]["data"]["n_step"] == ours["config"]["data"]["n_step"] == 1 and peer["updates_per_s"] > 0
    assert peer["final"]["Breakout"]["episodes"] == 2 and ours["config"]["loss"]["cql_alpha"] == 1.0

    mixed = json.loads((results / "data__mixed.json").read_text())
    assert mixed["collection"]["policy"] == "mixed" and set(mixed["behaviour_parts"]["Breakout"]) == {"scripted", "poor"}
    assert set(mixed["collection"]["parts"]["Freeway"]) == {"scripted", "poor"}
    assert json.loads((results / "mixed__cql_dr3__seed2.json").read_text())["config"]["data"]["path"].endswith("mixed")
    alpha = json.loads((results / "mixed-alpha0.1__cql_dr3__seed0.json").read_text())
    assert alpha["variant"] == "alpha0.1" and alpha["config"]["loss"]["cql_alpha"] == 0.1 and alpha["config"]["loss"]["dr3_coef"] == 0.03

    variant = json.loads((results / "transfer__Breakout_m0d1__online-calql__pretrained__seed2.json").read_text())
    assert variant["games"] == ["Breakout-m0d1"] and variant["config"]["online"]["enabled"] is True
    assert variant["config"]["loss"]["calibrated"] is True and variant["config"]["finetune"]["init"].endswith("transfer-pretrain-Breakout")
    scratch = json.loads((results / "transfer__Freeway__offline__scratch__seed1.json").read_text())
    assert scratch["config"]["finetune"]["init"] == "" and scratch["config"]["online"]["enabled"] is False
    assert json.loads((results / "data__transfer-Breakout_m0d1.json").read_text())["games"]["Breakout-m0d1"]["mode"] == 0

    report, summary = out.read_text(), json.loads(summary_path(out).read_text())
    assert summary["jobs"] == {"finished": 52, "total": 52, "missing": []}
    # Transfer: a row per target, mode and start, each with its final return and area under the curve.
    rows = {(r["game"], r["mode"], r["start"]): r for r in summary["transfer"]}
    assert len(rows) == 2 * 2 * 2 and all(r["summary"]["seeds"] == 2 and len(r["auc_per_seed"]) == 2 for r in rows.values())
    assert rows[("Breakout-m0d1", "online-calql", "pretrained")]["intervals"] in ("pretrained higher", "scratch higher", "overlap")
    # The variant of a pretraining game is also played by the pretrained network before fine-tuning (its game's
    # head); the held-out game, with no head to play it, is not.
    zero = json.loads((results / "transfer__Breakout_m0d1__zero-shot.json").read_text())
    assert zero["final"]["Breakout-m0d1"]["head"] == "Breakout" and zero["final"]["Breakout-m0d1"]["episodes"] == 2
    assert summary["transfer_zero_shot"]["Breakout-m0d1"]["mean"] == zero["final"]["Breakout-m0d1"]["mean"]
    assert summary["transfer_zero_shot"]["Freeway"] is None and "before fine-tuning (zero-shot, Breakout head)" in report
    # Beside them, what each target's small dataset's own policy scores.
    assert summary["transfer_behaviour"]["Breakout-m0d1"]["episodes"] == 2 and summary["transfer_behaviour"]["Freeway"]["epsilon"] == 0.5
    # Mixed quality: each part of the behaviour alone, the data, and both methods against the data and BC.
    for game in ("Breakout", "Freeway"):
        mixed_table = summary["mixed"][game]
        assert set(mixed_table["parts_alone"]) == {"scripted", "poor"} and mixed_table["parts_alone"]["poor"]["episodes"] == 2
        assert mixed_table["data"]["episodes"] > 0 and mixed_table["methods"]["cql_dr3"]["seeds"] == 2
        assert mixed_table["methods"]["cql_dr3"]["versus_bc"] in ("better", "worse", "within noise", "n/a")
        assert mixed_table["methods"]["bc"]["versus_bc"] is None
        # A setting tried beyond the regime's own: the seed it was tried on, then the check, in rows of their own.
        tried, check = mixed_table["variants"]["alpha0.1/cql_dr3"]["tried"], mixed_table["variants"]["alpha0.1/cql_dr3"]["check"]
        assert tried["seeds"] == check["seeds"] == 1 and check["versus_bc"] in ("better", "worse", "within noise", "n/a")
    # The reference implementation, the probes (the seed tried, then the check) and the policies.
    assert summary["peer"]["d3rlpy"]["version"] == "2.8.1" and summary["peer"]["d3rlpy"]["updates"] == summary["peer"]["ours"]["updates"] == 4
    # The peer again at another setting (its own rows and runs, with the setting in their config).
    assert summary["peer"]["lr3e-4/d3rlpy"]["seeds"] == summary["peer"]["lr3e-4/ours"]["seeds"] == 1
    variant_run = json.loads((results / "peer-lr3e-4__ours__seed1.json").read_text())
    assert variant_run["variant"] == "lr3e-4" and variant_run["config"]["train"]["lr"] == 3e-4
    probe_rows = [(r["row"], r["seeds"], r["updates"]) for r in summary["probes"]]
    assert [(seeds, updates) for _, seeds, updates in probe_rows] == [([1, 2], 4), ([0], 8), ([1], 8)]
    assert "seed 0 (where it was tried)" in probe_rows[1][0] and "(the check)" in probe_rows[2][0]
    for game in ("Breakout", "Freeway"):
        assert all(table["returns"][game][m]["seeds"] == 2 for m in ("bc", "cql_dr3") for table in summary["tables"].values())
    # The main tables at each budget: the suite's own, and again at a further one (its runs carry its settings).
    assert set(summary["tables"]) == {"long", "first"} and summary["tables"]["long"]["overrides"] == ["train.steps=8"]
    for key, table in summary["tables"].items():
        assert table["returns"]["Breakout"]["cql_dr3/single-game"]["seeds"] == 2 and table["returns"]["Breakout"]["behaviour"]["episodes"] == 2
        assert set(table["aggregate"]) == {"bc", "cql_dr3"} and all(len(a["ci"]) == 2 for a in table["aggregate"].values())
        assert set(table["policy"]["cql_dr3"]) == {"seeds", "Breakout", "Freeway"}
    longer = json.loads((results / "multi-long__cql_dr3__seed2.json").read_text())
    assert longer["budget"] == "long" and longer["updates"] == 8 and longer["config"]["games"] == ["Breakout", "Freeway"]
    assert json.loads((results / "single-long__Breakout__cql_dr3__seed1.json").read_text())["updates"] == 8
    assert summary["finetune"]["pretrained"]["seeds"] == 2
    # With every job finished no goal is open, and each verdict is the tables' own comparison.
    behaviour_goal, mixed_goal, peer_goal, transfer_goal = summary["goals"]
    assert all(p["verdict"] in ("met", "not met") for g in summary["goals"] for p in g["parts"])
    assert [p["verdict"] for p in behaviour_goal["parts"]] == [
        "met" if len(summary["tables"][k]["aggregate"]["cql_dr3"]["beats_behaviour_on"]) >= 2 else "not met" for k in ("long", "first")]
    assert [p["where"] for p in mixed_goal["parts"]] == ["the regime's own settings", "CQL alpha 0.1, the check"]
    assert mixed_goal["parts"][0]["verdict"] == ("met" if all(summary["mixed"][g]["methods"]["cql_dr3"]["versus_bc"] == "better"
                                                              for g in ("Breakout", "Freeway")) else "not met")
    assert [p["where"] for p in peer_goal["parts"]] == ["the suite's setting", "learning rate 3e-4"]
    assert [p["verdict"] for p in transfer_goal["parts"]] == [
        "met" if rows[("Breakout-m0d1", m, "pretrained")]["intervals"] == "pretrained higher" else "not met" for m in ("offline", "online-calql")]
    # Every plot exists and the report links it where it says.
    assert {p.rsplit("/", 1)[1] for p in summary["plots"]} == {"curves.png", "values.png", "curves-long.png", "values-long.png",
                                                                 "finetune.png", "transfer.png"}
    for link in summary["plots"]:
        assert (out.parent / link).stat().st_size > 1000 and f"({link})" in report

    # A record written before the benchmark measured the greedy policy gets it from the final
    # checkpoint on the next run, marked as added afterwards; nothing else changes.
    path = results / "multi__bc__seed1.json"
    record = json.loads(path.read_text())
    del record["policy"]
    path.write_text(json.dumps(record))
    assert main(args) == 0
    again = json.loads(path.read_text())
    assert again["policy"] == policy_record and again["policy_added"]["from"].endswith("00000004")
    assert {k: v for k, v in again.items() if k not in ("policy", "policy_added")} == record

    # --report-only rewrites the report without running; --list shows every job as done.
    out.unlink()
    assert main([*args, "--report-only"]) == 0 and out.is_file()
    capsys.readouterr()
    assert main([*args, "--list"]) == 0
    assert capsys.readouterr().out.count("done  ") == 52

    # A fresh clone holds the results, not the datasets: a job still to run makes its dataset again.
    import shutil

    shutil.rmtree(work / "data" / "main")
    (results / "probe__Breakout-cql_dr3-2x__seed1.json").unlink()
    assert main([*args, "--only", "probe/*/seed1"]) == 0
    assert (work / "data" / "main" / "scaled_ql_dataset.json").is_file()
    assert "making it again" in capsys.readouterr().out


def test_verdicts_say_what_the_numbers_allow():
    """The comparisons under every published verdict: no verdict from a missing number, sample
    standard errors from the population deviations the evaluator stores, and no goal called
    while one of its parts is still running (or BC, its yardstick, is)."""
    one = {"mean": 2.0, "se_seeds": 0.1, "se_episodes": 0.1}
    assert compare(one, {"mean": float("nan"), "se_seeds": 0.1, "se_episodes": 0.1}) == "n/a"
    assert compare(one, {"mean": 1.0, "se_seeds": 0.1, "se_episodes": 0.1}) == "**better**"
    returns = [1.0, 2.0, 6.0]
    assert se_from_std(float(np.std(returns)), 3) == pytest.approx(np.std(returns, ddof=1) / math.sqrt(3))
    assert math.isnan(se_from_std(0.0, 1))

    met, missed, running = ({"verdict": v} for v in ("met", "not met", "open"))
    assert _overall([met, met]) == "met" and _overall([missed]) == "not met" and _overall([met, missed]) == "met in 1 of 2"
    assert _overall([met, running]).startswith("open: 1 of 2 parts") and _overall([]).startswith("open")

    suite = SUITES["smoke"]
    cql = {"seeds": 2, "versus_bc": "better"}
    summary = {"mixed": {g: {"methods": {"cql_dr3": cql, "bc": {"seeds": 2}}, "variants": {}} for g in suite.games}}
    assert _mixed_parts(suite, summary, need=2, want=2)[0]["verdict"] == "met"
    summary["mixed"]["Freeway"]["methods"]["bc"] = {"seeds": 1}  # BC still running: no verdict against it
    assert _mixed_parts(suite, summary, need=2, want=2)[0]["verdict"] == "open"


def test_bad_requests_name_what_is_wrong(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown suite 'big'.*cpu-small"):
        LearningBenchmark("big", tmp_path, tmp_path)
    with pytest.raises(ValueError, match="matches no job"):
        LearningBenchmark("smoke", tmp_path, tmp_path).select(("nothing/*",))
    assert main(["bench", "learning", "--suite", "smoke", "train.steps=3"]) == 2
    assert "a suite fixes its settings" in capsys.readouterr().err


def test_cpu_small_suite_is_the_issue_protocol():
    suite = SUITES["cpu-small"]
    assert len(suite.games) >= 3 and len(suite.seeds) >= 3
    assert {m.name for m in suite.methods} == {"bc", "dqn", "cql", "cql_dr3", "iql"}
    assert suite.finetune_game in suite.games and suite.single_game in suite.games
    bench = LearningBenchmark("cpu-small", "/nonexistent/work", "/nonexistent/results")
    assert len(bench.jobs) == (2 + 5 * 3 + 2 * 3 + 1 + 2 * 3 + 2 * len(suite.peer_seeds) * (1 + len(suite.peer_variants)) + sum(len(p.seeds) for p in suite.probes)
                               + len(suite.table_budgets) * 3 * (5 + 2)
                               + 1 + 3 * len(suite.mixed_methods) + sum(len(v[4]) for v in suite.mixed_variants)
                               + 1 + len(suite.transfer.targets) * (1 + 2 * len(suite.transfer.modes) * len(suite.transfer.seeds))
                               + 1)  # the held-out variant before fine-tuning (the held-out game has no head to play it)
    assert "transfer/Breakout_m0d1/zero-shot" in {j.id for j in bench.jobs}
    # Probes run last and on a seed the tables do not use (their settings were not tuned on the reported seeds).
    probes = [j for j in bench.jobs if j.kind == "probe"]
    assert bench.jobs[-len(probes):] == probes and len(probes) == sum(len(p.seeds) for p in suite.probes)
    assert all(p.seeds[0] not in suite.seeds for p in suite.probes)
    cfg = bench.config()
    assert cfg.train.batch_size % len(suite.games) == 0 and cfg.games == list(suite.games)
