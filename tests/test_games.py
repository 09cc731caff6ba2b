"""The game registry: names, reference scores, action sets from ale_py, game sets."""

import ale_py
import gymnasium as gym
import pytest

from scaled_ql import games
from scaled_ql.games import (
    GAMES,
    NUM_ACTIONS_FULL,
    SCALED_QL_HELD_OUT_GAMES,
    SCALED_QL_TRAIN_GAMES,
    get_game,
    human_normalized_score,
)

pytestmark = pytest.mark.ale

gym.register_envs(ale_py)


def test_human_normalized_score_by_hand():
    # Pong: random -20.7, human 14.6 (dqn_zoo), so the span is 35.3.
    assert human_normalized_score("Pong", -20.7) == pytest.approx(0.0)
    assert human_normalized_score("Pong", 14.6) == pytest.approx(1.0)
    assert human_normalized_score("Pong", -3.05) == pytest.approx(0.5)
    assert human_normalized_score("Pong", 21.0) == pytest.approx(41.7 / 35.3)
    # Breakout: random 1.7, human 30.5.
    assert human_normalized_score("breakout", 16.1) == pytest.approx(0.5)


def test_reference_scores_match_dqn_zoo_spot_checks():
    assert (get_game("Alien").random_score, get_game("Alien").human_score) == (227.8, 7127.7)
    assert (get_game("Skiing").random_score, get_game("Skiing").human_score) == (-17098.1, -4336.9)
    assert (get_game("VideoPinball").random_score, get_game("VideoPinball").human_score) == (16256.9, 17667.9)
    assert len(games.ATARI_57_GAMES) == 57
    assert all(GAMES[name].has_reference_scores for name in games.ATARI_57_GAMES)


def test_games_without_reference_scores_are_not_normalized():
    for name in ("Carnival", "Pooyan"):
        spec = get_game(name)
        assert spec.random_score is None and spec.human_score is None
        assert human_normalized_score(name, 1234.0) is None
    missing = [g for g in games.MULTI_GAME_DT_GAMES if not get_game(g).has_reference_scores]
    assert missing == ["Carnival", "Pooyan"]


@pytest.mark.parametrize("spelling", ["Pong", "pong", "ALE/Pong-v5", " PONG "])
def test_get_game_accepts_common_spellings(spelling):
    assert get_game(spelling) is GAMES["Pong"]


def test_get_game_snake_case_and_env_id():
    spec = get_game("ms_pacman")
    assert spec.name == "MsPacman" and spec.ale_name == "ms_pacman"
    assert spec.env_id == "ALE/MsPacman-v5"
    assert get_game("ALE/SpaceInvaders-v5").ale_name == "space_invaders"


@pytest.mark.parametrize("typo, suggestion", [("Pongg", "Pong"), ("SpaceInvader", "SpaceInvaders"), ("mspacmn", "MsPacman")])
def test_unknown_game_names_it_and_suggests_closest(typo, suggestion):
    with pytest.raises(KeyError) as info:
        get_game(typo)
    message = info.value.args[0]
    assert f"unknown game '{typo}'" in message
    assert f"did you mean '{suggestion}'?" in message


def test_config_rejects_unknown_game_with_suggestion():
    from scaled_ql.config import ConfigError, ExperimentConfig

    with pytest.raises(ConfigError, match="did you mean 'Breakout'"):
        ExperimentConfig(games=["Pong", "Breakot"])


def test_every_registered_game_loads_in_ale_py_and_gymnasium():
    for spec in GAMES.values():
        assert spec.env_id in gym.registry, spec.name
        actions = spec.action_set
        assert 1 <= spec.num_actions == len(actions) <= NUM_ACTIONS_FULL, spec.name
        assert len(set(actions)) == len(actions) and all(0 <= a < NUM_ACTIONS_FULL for a in actions), spec.name
    assert get_game("Pong").num_actions_full == 18


@pytest.mark.parametrize("name", ["Pong", "MsPacman", "Breakout", "Carnival", "Seaquest"])
def test_num_actions_matches_gymnasium(name):
    env = gym.make(get_game(name).env_id)
    try:
        assert get_game(name).num_actions == env.action_space.n
        assert list(get_game(name).action_set) == [a.value for a in env.unwrapped._action_set]
    finally:
        env.close()


def test_scaled_ql_game_sets():
    train, held_out = SCALED_QL_TRAIN_GAMES, SCALED_QL_HELD_OUT_GAMES
    assert set(held_out) == {"Alien", "MsPacman", "Pong", "SpaceInvaders", "StarGunner"}
    # The best-sourced list is Multi-Game DT's 41 training games (see games.py: the paper's
    # "40" could not be pinned to a named list).
    assert len(train) == len(set(train)) == 41
    assert not set(train) & set(held_out)
    assert all(name in GAMES for name in train + held_out)
    assert set(train) | set(held_out) == set(games.MULTI_GAME_DT_GAMES)
    assert len(games.MULTI_GAME_DT_GAMES) == 46
