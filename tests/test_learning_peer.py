"""The d3rlpy peer of the learning benchmark sees exactly our transitions (skipped without d3rlpy,
an optional benchmark dependency that `make setup` installs)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures import decode_stack, write_synthetic_dataset

d3rlpy = pytest.importorskip("d3rlpy")

from scaled_ql.learning_peer import export_mdp_dataset  # noqa: E402


@pytest.mark.parametrize("game", ["Pong", "Breakout"])
def test_exported_transitions_are_our_one_step_transitions(tmp_path, game):
    data = write_synthetic_dataset(tmp_path / "d")
    dataset = export_mdp_dataset(data.path, game)
    picker = d3rlpy.dataset.FrameStackTransitionPicker(n_frames=4)
    mine = [(i, ep) for i, ep in enumerate(data.episodes) if ep.game == game]
    assert len(dataset.episodes) == len(mine)
    assert dataset.transition_count == sum(len(ep.rewards) for _, ep in mine)  # one per agent step, none from final rows
    seen = set()
    for episode in dataset.episodes:
        for t in range(episode.transition_count):
            tr = picker(episode, t)
            obs = decode_stack(tr.observation)
            index, step = obs[-1]
            want = data.expected_transition(index, step, n_step=1, gamma=0.99, reward_clip=0.0)
            assert obs == want["obs"] and int(tr.action[0]) == want["action"]
            assert float(tr.reward[0]) == pytest.approx(want["reward"])
            assert bool(tr.terminal) == (want["discount"] == 0.0)
            if not tr.terminal:  # d3rlpy gives zeros after a terminal; we give the final frame with discount 0
                assert decode_stack(tr.next_observation) == want["next_obs"]
            seen.add((index, step))
    assert seen == {(i, s) for i, ep in mine for s in range(len(ep.rewards))}
