"""Scripted RAM-reading behaviour policies and the RAM environment they play on.

The datasets of the learning benchmark are played on RamVectorEnv (ale_py's vector env has no
RAM); what makes them usable is that its frames are those the vector env, which evaluation uses,
would have produced. That is checked here frame for frame, with real ALE.
"""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.scripted import SCRIPTED_POLICIES, scripted_policy
from scaled_ql.config import ConfigError, EnvConfig, load_config
from scaled_ql.envs.atari import make_vector_env
from scaled_ql.envs.ram import RamVectorEnv, area_resize, area_resize_table

pytestmark = pytest.mark.ale


@pytest.mark.parametrize("game,steps,max_steps", [("Breakout", 260, 0), ("Freeway", 40, 0), ("Pong", 70, 30)])
def test_ram_env_frames_rewards_and_ends_equal_the_vector_envs(game, steps, max_steps):
    cfg = EnvConfig(sticky_action_prob=0.0)  # deterministic, so both emulators stay in step
    ram_env = RamVectorEnv(game, 2, cfg, max_episode_steps=max_steps)
    vec_env = make_vector_env(game, 2, cfg, frame_stack=1, max_episode_steps=max_steps)
    try:
        a, info = ram_env.reset(seed=0)
        b, _ = vec_env.reset(seed=0)
        assert info["ram"].shape == (2, 128) and info["ram"].dtype == np.uint8
        np.testing.assert_array_equal(a, b)
        rng = np.random.default_rng(0)
        ends = 0
        for t in range(steps):
            action = rng.integers(0, ram_env.single_action_count, 2)
            a, ra, ta, tra, _ = ram_env.step(action)
            b, rb, tb, trb, _ = vec_env.step(action)
            np.testing.assert_array_equal(a, b, err_msg=f"{game} step {t}")
            np.testing.assert_array_equal(ra, rb)
            np.testing.assert_array_equal(ta, tb)
            np.testing.assert_array_equal(tra, trb)
            ends += int((ta | tra).sum())
        if game != "Freeway":
            assert ends > 0, "the comparison must cross an episode end and its reset"
    finally:
        vec_env.close()


def test_area_resize_keeps_flat_images_flat_and_averages():
    ytab, xtab = area_resize_table(210, 84), area_resize_table(160, 84)
    flat = np.full((210, 160), 77, dtype=np.uint8)
    assert (area_resize(flat, ytab, xtab) == 77).all()
    # Every output pixel's weights sum to 1 (an average).
    for index, weight in (ytab, xtab):
        np.testing.assert_allclose(weight.sum(1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="downscale"):
        area_resize_table(10, 20)


def test_ram_addresses_move_as_the_scripts_assume():
    env = RamVectorEnv("Pong", 1, EnvConfig(sticky_action_prob=0.0))
    _, info = env.reset(seed=0)
    for _ in range(8):
        _, _, _, _, info = env.step(np.array([3]))  # LEFT: down
    low = int(info["ram"][0, 51])
    for _ in range(8):
        _, _, _, _, info = env.step(np.array([2]))  # RIGHT: up
    assert int(info["ram"][0, 51]) < low

    env = RamVectorEnv("Breakout", 1, EnvConfig(sticky_action_prob=0.0))
    _, info = env.reset(seed=0)
    assert info["ram"][0, 101] == 0  # no ball in play before FIRE
    assert scripted_policy("Breakout")(info["ram"])[0] == 1
    for _ in range(5):
        _, _, _, _, info = env.step(np.array([1]))
    assert info["ram"][0, 101] > 0


def _play(game: str, epsilon: float, steps: int, kind: str = "scripted") -> float:
    env = RamVectorEnv(game, 2, EnvConfig())
    _, info = env.reset(seed=3)
    rng, policy, total = np.random.default_rng(3), scripted_policy(game, kind), 0.0
    for _ in range(steps):
        action = np.where(rng.random(2) < epsilon, rng.integers(0, env.single_action_count, 2), policy(info["ram"]))
        _, reward, _, _, info = env.step(action)
        total += float(reward.sum())
    return total


@pytest.mark.parametrize("game", ["Breakout", "Freeway"])
def test_scripted_policies_beat_random(game):
    assert _play(game, 0.0, 300) > _play(game, 1.0, 300) + 2


def test_scripted_prep_writes_the_behaviour_returns_into_the_card(tmp_path):
    from data_prep.rollout import collect_dataset
    from scaled_ql.data.schema import read_metadata

    cfg = load_config(None, ["games=[Breakout, Freeway]", "prep.policy=scripted", "prep.epsilon=0.5",
                             "prep.steps_per_game=200", "prep.num_envs=2", "prep.max_episode_steps=60"])
    meta = collect_dataset(cfg, tmp_path / "d", progress=False)
    assert meta.collection["policy"] == "scripted" and meta.collection["epsilon"] == 0.5
    stats = read_metadata(tmp_path / "d").games["Breakout"]
    assert {"return_mean", "return_std", "return_min", "return_max"} <= set(stats)
    card = (tmp_path / "d" / "README.md").read_text()
    assert "scripted controller reading object positions from the Atari RAM" in card
    assert f"{stats['return_mean']:.2f} +/- " in card

    with pytest.raises(ValueError, match="no scripted controller for game .Boxing..*Pong, Breakout, Freeway, SpaceInvaders"):
        collect_dataset(load_config(None, ["games=[Boxing]", "prep.policy=scripted"]), tmp_path / "e", progress=False)
    with pytest.raises(ConfigError, match="prep.policy"):
        load_config(None, ["prep.policy=scripts"])
    assert set(SCRIPTED_POLICIES) == {"Pong", "Breakout", "Freeway", "SpaceInvaders"}


@pytest.mark.parametrize("game", ["Pong", "Breakout", "Freeway"])
def test_poor_controllers_lose_to_the_scripted_ones(game):
    assert _play(game, 0.0, 400, "poor") < _play(game, 0.0, 400) - 1


def test_mixed_prep_plays_a_quarter_of_the_envs_with_the_good_controller_and_records_each_part(tmp_path):
    from data_prep.rollout import collect_dataset
    from scaled_ql.data.schema import read_metadata
    from scaled_ql.data.store import ReplayStore

    cfg = load_config(None, ["games=[Freeway]", "prep.policy=mixed", "prep.epsilon=0.0", "prep.good_fraction=0.25",
                             "prep.steps_per_game=400", "prep.num_envs=4", "prep.max_episode_steps=100"])
    meta = collect_dataset(cfg, tmp_path / "d", progress=False)
    parts = read_metadata(tmp_path / "d").collection["parts"]["Freeway"]
    assert parts["scripted"]["envs"] == 1 and parts["poor"]["envs"] == 3
    assert parts["scripted"]["episodes"] == 1 and parts["poor"]["episodes"] == 3  # 100 steps per env, one episode each
    assert parts["poor"]["return_max"] == 0.0 and parts["scripted"]["return_mean"] > 0  # DOWN never scores; UP does
    actions = ReplayStore(tmp_path / "d", ["Freeway"]).action
    counts = np.bincount(actions, minlength=3)
    assert counts.argmax() == 2 and counts[2] > 2.5 * counts[1]  # the data's most frequent action is the poor one
    assert "mixed quality: 0.25 of the environments" in (tmp_path / "d" / "README.md").read_text()
    assert meta.collection["good_fraction"] == 0.25

    with pytest.raises(ConfigError, match="prep.good_fraction.*prep.num_envs=4"):
        load_config(None, ["prep.policy=mixed", "prep.good_fraction=0.3", "prep.num_envs=4"])
