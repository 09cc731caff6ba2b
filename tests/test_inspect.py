"""dataset_info and transition, checked against numbers worked out by hand from the fixture.

Fixture episodes (tests/fixtures.py DEFAULT_EPISODES), rewards r_0..r_{T-1}:
  0 Pong     0, 1, 0, -1, 0, 2            terminal   return 2
  1 Pong     5, -3                        truncated  return 2
  2 Pong     0, 0, 1, 0, 0, 0, -1, 0      truncated  return 0
  3 Breakout 1, 0, 0, 4, 0                terminal   return 5
  4 Breakout 7                            terminal   return 7
  5 Breakout 0, 1, 1, 0, 0, 1, 0          truncated  return 3
"""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import decode_stack, write_synthetic_dataset
from PIL import Image

from scaled_ql.data.schema import DatasetFormatError
from scaled_ql.data.inspection import dataset_info, format_dataset_info, format_transition, save_transition_image, transition
from scaled_ql.data.parquet import export_parquet
from scaled_ql.data.store import ReplayStore


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inspect")
    data = write_synthetic_dataset(tmp / "arrow", max_shard_size=100_000)
    export_parquet(data.path, tmp / "pq", rows_per_shard=8)
    data.parquet = tmp / "pq"
    return data


@pytest.mark.parametrize("kind", ["arrow", "parquet"])
def test_dataset_info_by_hand(data, kind):
    info = dataset_info(data.path if kind == "arrow" else data.parquet)
    assert info["format"] == kind and info["frame_shape"] == [84, 84]
    assert info["games"]["Pong"] == {
        "rows": 19, "episodes": 3, "terminal_episodes": 1, "truncated_episodes": 2, "transitions": 16,
        "episode_length": {"mean": 5.3333, "min": 6 - 4, "max": 8},  # T = 6, 2, 8
        "return": {"mean": 1.3333, "min": 0.0, "max": 2.0},  # 2, 2, 0
        "return_mean_terminal": 2.0,
    }
    assert info["games"]["Breakout"]["return"] == {"mean": 5.0, "min": 3.0, "max": 7.0}  # 5, 7, 3
    assert info["games"]["Breakout"]["return_mean_terminal"] == 6.0  # (5 + 7) / 2
    assert info["games"]["Breakout"]["episode_length"] == {"mean": 4.3333, "min": 1, "max": 7}
    assert info["total"] == {"rows": 35, "episodes": 6, "transitions": 29}
    assert info["collection"]["source"] == "synthetic test fixture"
    folder = data.path if kind == "arrow" else data.parquet
    assert info["bytes_on_disk"] == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    text = format_dataset_info(info)
    assert "source: synthetic test fixture; behaviour policy: random (epsilon 1.0)" in text
    assert any(line.split() == ["Pong", "16", "3", "1/2", "5.3", "1.3", "0.0", "2.0", "2.0"] for line in text.splitlines())
    assert any(line.split() == ["total", "29", "6"] for line in text.splitlines())


def test_dataset_info_names_a_folder_that_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetFormatError, match=f"'{tmp_path}' has no 'scaled_ql_dataset.json'"):
        dataset_info(tmp_path)


def test_transition_inside_an_episode(data):
    # Breakout's transition 0: episode 3, step 0; rewards 1, 0, 0 -> return 1, bootstrap at step 3.
    t = transition(data.path, "breakout", 0)
    assert (t["game"], t["episode_id"], t["step"], t["next_step"], t["steps"], t["transitions"]) == ("Breakout", 1021, 0, 3, 3, 13)
    assert t["action"] == (3 + 0) % 3 + 1 and t["reward"] == 1.0
    assert t["n_step_return"] == pytest.approx(1.0) and t["discount"] == pytest.approx(0.99**3)
    assert not t["terminal"] and not t["truncated"]
    assert decode_stack(t["obs"]) == [None, None, None, (3, 0)]
    assert decode_stack(t["next_obs"]) == [(3, 0), (3, 1), (3, 2), (3, 3)]


def test_transition_reaching_terminal_and_truncated_ends(data):
    store = ReplayStore(data.path, data.games)
    # Pong 5: episode 0, step 5, r = 2 clipped to 1, then the terminal last row: no bootstrap.
    t = transition(store, "Pong", 5)
    assert (t["step"], t["next_step"], t["steps"], t["terminal"]) == (5, 6, 1, True)
    assert t["reward"] == 2.0 and t["n_step_return"] == pytest.approx(1.0) and t["discount"] == 0.0
    assert decode_stack(t["next_obs"]) == [(0, 3), (0, 4), (0, 5), (0, 6)]
    # Pong 6: episode 1 (5, -3, truncated): 1 - 0.99 = 0.01, bootstraps with 0.99^2 from the final frame.
    t = transition(store, "Pong", 6)
    assert (t["episode_id"], t["step"], t["steps"], t["truncated"], t["terminal"]) == (1007, 0, 2, True, False)
    assert t["n_step_return"] == pytest.approx(0.01, abs=1e-6) and t["discount"] == pytest.approx(0.9801)
    assert decode_stack(t["next_obs"]) == [None, (1, 0), (1, 1), (1, 2)]
    # Unclipped, 1-step, gamma 0.5: just r_t.
    t = transition(store, "Pong", 6, n_step=1, gamma=0.5, reward_clip=0.0)
    assert t["n_step_return"] == 5.0 and t["discount"] == 0.5
    # Negative indices count from the end: Pong -1 is episode 2's step 7.
    t = transition(store, "Pong", -1)
    assert (t["index"], t["episode_id"], t["step"]) == (15, 1014, 7)
    text = format_transition(t)
    assert "Pong transition 15 of 16" in text and "truncated: bootstraps" in text


def test_transition_errors_and_image(data, tmp_path):
    with pytest.raises(IndexError, match="game 'Pong' has 16 transitions"):
        transition(data.path, "Pong", 16)
    with pytest.raises(KeyError, match="game 'Boxing' is not in dataset"):
        transition(data.path, "Boxing", 0)
    with pytest.raises(DatasetFormatError, match="is a Parquet folder"):
        transition(data.parquet, "Pong", 0)
    t = transition(data.path, "Breakout", 3)
    image = Image.open(save_transition_image(t, tmp_path / "t.png"))
    assert image.size == (4 * 84 + 3 * 2, 2 * 84 + 2) and image.mode == "L"
    pixels = np.asarray(image)
    assert pixels[0, 0] == 4 and pixels[1, 1] == 1 and pixels[86, 3 * 86 + 1] == 6  # episode 3: obs from step 0, next_obs up to step 5
