"""The ALE evaluator: real (short) episodes, exact episode counts, files, policy checks."""

import json

import numpy as np
import pytest

from scaled_ql.config import EnvConfig, EvalConfig
from scaled_ql.eval.evaluate import aggregate_scores, evaluate, evaluate_game, format_score_table
from scaled_ql.games import human_normalized_score

pytestmark = pytest.mark.ale


def noop_policy(obs, game_id):
    assert obs.dtype == np.uint8 and obs.shape[1:] == (4, 84, 84)
    return np.zeros(obs.shape[0], dtype=np.int64)


def test_evaluate_pong_and_carnival_writes_json_and_png(tmp_path):
    seen_ids = {}

    def policy(obs, game_id):
        seen_ids.setdefault(game_id, obs.shape[0])
        return noop_policy(obs, game_id)

    eval_cfg = EvalConfig(episodes=2, num_envs=2, max_episode_steps=200, bootstrap_samples=200)
    results = evaluate(policy, ["Pong", "carnival"], EnvConfig(), eval_cfg, seed=0, out_dir=tmp_path, progress=False)

    assert seen_ids == {0: 2, 1: 2}
    pong = results["games"]["Pong"]
    assert len(pong["returns"]) == len(pong["lengths"]) == pong["episodes"] == 2
    # A Pong game lasts far longer than 200 agent steps: both episodes are cut by the cap.
    assert pong["lengths"] == [200, 200] and pong["truncated_episodes"] == 2
    assert all(r <= 0 for r in pong["returns"])  # a no-op player never scores in 200 steps
    assert pong["mean"] == pytest.approx(np.mean(pong["returns"]))
    assert pong["human_normalized"] == pytest.approx(human_normalized_score("Pong", pong["mean"]))
    assert results["games"]["Carnival"]["human_normalized"] is None

    agg = results["aggregate"]
    assert agg["excluded_games"] == ["Carnival"] and agg["games"] == ["Pong"]
    assert agg["iqm"]["value"] == pytest.approx(pong["human_normalized"])
    lo, hi = agg["iqm"]["ci"]
    assert lo <= agg["iqm"]["value"] <= hi
    protocol = results["protocol"]
    assert protocol["epsilon"] == 0.001 and protocol["sticky_action_prob"] == 0.25
    assert protocol["max_episode_steps"] == 200 and protocol["max_episode_frames"] == 108_000

    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["games"]["Pong"]["returns"] == pong["returns"]
    assert saved["aggregate"]["excluded_games"] == ["Carnival"]
    png = (tmp_path / "eval.png").read_bytes()
    assert len(png) > 1000 and png.startswith(b"\x89PNG")

    table = format_score_table(results)
    assert "Pong" in table and "Carnival" in table and "n/a" in table and "IQM" in table


def test_exactly_the_requested_number_of_episodes():
    eval_cfg = EvalConfig(episodes=3, num_envs=2, max_episode_steps=20)
    result = evaluate_game(noop_policy, "Breakout", 0, 3, EnvConfig(), eval_cfg, seed=0)
    assert len(result["returns"]) == len(result["lengths"]) == 3
    assert result["lengths"] == [20, 20, 20] and result["truncated_episodes"] == 3


def test_same_seed_same_episodes():
    # epsilon=1 makes every action random, drawn from the evaluator's seeded generator.
    eval_cfg = EvalConfig(episodes=2, num_envs=2, epsilon=1.0, max_episode_steps=100)
    run = lambda seed: evaluate_game(noop_policy, "Breakout", 0, 2, EnvConfig(), eval_cfg, seed=seed)  # noqa: E731
    first, second = run(7), run(7)
    assert first["returns"] == second["returns"] and first["lengths"] == second["lengths"]


@pytest.mark.parametrize(
    "bad_policy, expected",
    [
        (lambda obs, gid: np.zeros((obs.shape[0], 1), dtype=np.int64), r"expected shape \(2,\)"),
        (lambda obs, gid: np.zeros(obs.shape[0] + 1, dtype=np.int64), r"found shape \(3,\)"),
        (lambda obs, gid: np.zeros(obs.shape[0], dtype=np.float32), "integer action indices"),
        (lambda obs, gid: np.full(obs.shape[0], 6), r"\[0, 6\)"),
    ],
)
def test_bad_policy_output_names_the_game(bad_policy, expected):
    eval_cfg = EvalConfig(episodes=2, num_envs=2, max_episode_steps=10)
    with pytest.raises(ValueError, match=expected) as info:
        evaluate_game(bad_policy, "Pong", 3, 2, EnvConfig(), eval_cfg, seed=0)
    assert "game 'Pong' (game_id 3)" in str(info.value)


def test_aggregate_point_estimates_use_game_means_and_intervals_episodes():
    per_game = {
        # Pong: normalized returns 0 and 1 -> mean 0.5; Breakout: 0.5 twice -> 0.5.
        "Pong": {"returns": [-20.7, 14.6], "human_normalized": 0.5},
        "Breakout": {"returns": [16.1, 16.1], "human_normalized": 0.5},
        "Pooyan": {"returns": [100.0, 200.0], "human_normalized": None},
    }
    agg = aggregate_scores(per_game, reps=500, seed=0)
    assert agg["excluded_games"] == ["Pooyan"] and agg["num_games"] == 2
    for name in ("iqm", "median", "mean"):
        assert agg[name]["value"] == pytest.approx(0.5)
        lo, hi = agg[name]["ci"]
        assert 0.0 <= lo < 0.5 < hi <= 1.0  # Pong's episodes vary, so the interval has width
