"""Game variants (a game in another ALE mode and difficulty): registry, environment, and the
user's path through prep, pretrain, finetune, evaluate and the model card, with real ALE."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scaled_ql.cli import main
from scaled_ql.config import ConfigError, EnvConfig, load_config
from scaled_ql.envs.atari import make_vector_env
from scaled_ql.envs.ram import RamVectorEnv
from scaled_ql.games import available_modes, get_game, human_normalized_score, variant_name

pytestmark = pytest.mark.ale

DEBUG = str(Path(__file__).resolve().parent.parent / "configs" / "debug.yaml")


def test_variant_names_modes_and_errors():
    spec = get_game("freeway_m1d0")
    assert (spec.name, spec.base, spec.mode, spec.difficulty) == ("Freeway-m1d0", "Freeway", 1, 0)
    assert get_game("Freeway-m1-d0") == spec and variant_name("freeway", 1, 0) == "Freeway-m1d0"
    assert spec.action_set == get_game("Freeway").action_set and spec.env_id == "ALE/Freeway-v5"
    assert human_normalized_score("Freeway-m1d0", 10.0) is None  # reference scores are the default mode's
    assert available_modes("Pong") == ((0, 1), (0, 1, 2, 3))
    with pytest.raises(KeyError, match=r"Pong has modes \[0, 1\] and difficulties \[0, 1, 2, 3\]; found mode 5"):
        get_game("Pong-m5d0")
    with pytest.raises(ConfigError, match="config key 'games'.*Breakout has modes"):
        load_config(DEBUG, ["games=[Pong, Breakout-m3d0]"])


def test_stacked_ram_env_equals_the_vector_env_and_the_mode_changes_the_game():
    cfg = EnvConfig(sticky_action_prob=0.0)
    ram, vec = RamVectorEnv("Pong", 2, cfg, max_episode_steps=30, frame_stack=4), make_vector_env("Pong", 2, cfg, max_episode_steps=30)
    try:
        a, _ = ram.reset(seed=0)
        b, _ = vec.reset(seed=0)
        np.testing.assert_array_equal(a, b)
        rng = np.random.default_rng(0)
        for t in range(70):  # crosses two truncations and their resets (zero-filled stacks)
            action = rng.integers(0, 6, 2)
            a, ra, ta, tra, _ = ram.step(action)
            b, rb, tb, trb, _ = vec.step(action)
            np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
            np.testing.assert_array_equal(tra, trb)
    finally:
        vec.close()

    def play(game: str) -> tuple[float, np.ndarray]:
        env = make_vector_env(game, 1, cfg)
        obs, _ = env.reset(seed=0)
        total = 0.0
        for _ in range(300):
            obs, reward, *_ = env.step(np.array([1]))  # UP
            total += float(reward.sum())
        return total, obs

    default, mode1 = play("Freeway"), play("Freeway-m1d0")
    assert isinstance(make_vector_env("Freeway-m1d0", 1, cfg), RamVectorEnv)
    assert default[0] > mode1[0]  # mode 1's faster traffic knocks the chicken back more often
    assert not np.array_equal(default[1], mode1[1])


@pytest.mark.slow
def test_prep_pretrain_finetune_evaluate_and_card_of_a_variant(tmp_path):
    runs, base_data, var_data = tmp_path / "runs", tmp_path / "base", tmp_path / "variant"
    small = ["prep.steps_per_game=200", "prep.max_episode_steps=60", "eval.episodes=1", "eval.max_episode_steps=30",
             f"runs_dir={runs}"]
    assert main(["prep", "--config", DEBUG, "games=[Freeway]", f"data.path={base_data}", *small]) == 0
    assert main(["prep", "--config", DEBUG, "games=[Freeway-m1d0]", f"data.path={var_data}", *small]) == 0
    meta = json.loads((var_data / "scaled_ql_dataset.json").read_text())
    assert meta["games"]["Freeway-m1d0"] | {"game": "Freeway", "mode": 1, "difficulty": 0} == meta["games"]["Freeway-m1d0"]
    assert "Freeway-m1d0 is Freeway in ALE mode 1, difficulty 0" in (var_data / "README.md").read_text()

    assert main(["pretrain", "--config", DEBUG, "--no-progress", "games=[Freeway]", f"data.path={base_data}",
                 "name=base", "train.batch_size=4", *small]) == 0
    # Zero-shot: the base network plays the variant with Freeway's head, and says so.
    zero = tmp_path / "zero-shot"
    assert main(["evaluate", "--checkpoint", str(runs / "base"), "--games", "Freeway-m1d0", "--episodes", "1",
                 "--max-episode-steps", "20", "--out", str(zero), "--no-progress"]) == 0
    played = json.loads((zero / "eval.json").read_text())["games"]["Freeway-m1d0"]
    assert played["head"] == "Freeway" and played["episodes"] == 1
    assert main(["evaluate", "--checkpoint", str(runs / "base"), "--games", "Pong-m0d1", "--episodes", "1"]) == 2
    assert main(["finetune", "--init", str(runs / "base"), "--game", "Freeway-m1d0", "--data", str(var_data),
                 "--no-progress", "name=variant", "train.steps=10", "train.batch_size=4", f"runs_dir={runs}"]) == 0
    config = json.loads(next((runs / "variant" / "checkpoints").glob("*/model/config.json")).read_text())
    assert config["games"] == ["Freeway-m1d0"]
    final = json.loads((runs / "variant" / "eval" / "final" / "eval.json").read_text())
    assert final["games"]["Freeway-m1d0"]["human_normalized"] is None

    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(runs / "variant"), "--episodes", "1", "--max-episode-steps", "20",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "eval.json").read_text())["games"]["Freeway-m1d0"]["episodes"] == 1

    card_dir = tmp_path / "card"
    assert main(["push", "--checkpoint", str(runs / "variant"), "--repo-id", "me/variant", "--dry-run", "--out", str(card_dir)]) == 0
    card = (card_dir / "README.md").read_text()
    assert "Freeway-m1d0 is Freeway in ALE mode 1, difficulty 0" in card and "Freeway-m1d0 (capped)" in card
    # Its evaluation was capped at 30 steps, so it is not in the model-index; an uncapped one is, by variant.
    from scaled_ql.hub.card import eval_results

    final["games"]["Freeway-m1d0"]["capped"] = False
    assert {r.dataset_name for r in eval_results(final)} == {"ALE/Freeway-v5 mode 1 difficulty 0"}


def test_a_variant_starts_from_its_games_head():
    import torch

    from scaled_ql.models import build_model

    base = build_model(load_config(DEBUG, ["games=[Freeway, Pong]", "model.feature_dim=16"]))
    variant = build_model(load_config(DEBUG, ["games=[Freeway-m1d0]", "model.feature_dim=16"]))
    report = variant.init_from(base)
    assert report == {"reused_heads": ["Freeway-m1d0"], "new_heads": [], "variant_heads": {"Freeway-m1d0": "Freeway"}}
    obs = torch.randint(0, 255, (2, 4, 84, 84), dtype=torch.uint8)
    zeros = torch.zeros(2, dtype=torch.long)
    assert torch.allclose(variant(obs, zeros).q, base(obs, zeros).q[:, :3])  # Freeway has 3 actions; Pong pads to 6
