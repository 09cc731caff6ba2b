"""DQN Replay (Dopamine logged replay) -> scaled_ql rows, against files written add by add as
Dopamine and batch_rl write them (tests/formats.py), with capacity 64 instead of 1,000,000."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_prep.conversion import REPORT_FILE, SkippedInputWarning, read_conversion_report, round_half_up
from data_prep.dqn_replay import convert_dqn_replay
from scaled_ql.data.schema import CARD_FILE, DatasetFormatError, read_metadata
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore
from tests.formats import DopamineLoggedBuffer, LoggedCheckpoint, expected_episodes, frame_label, save_npy_gz

CAP = 64
# Run 1: the first checkpoint trigger (add_count 63) is jumped over by an episode's padding, so
# checkpoint 0 is written at add_count 127 (wrapped); episode 22 (90 steps) fills checkpoint 4
# on its own; the run ends inside episode 28, so the final checkpoint's cursor cuts it.
RUN1 = [5, 9, 2, 20, 7, 1, 12, 30, 4, 8, 15, 6, 2, 11, 25, 9, 3, 14, 6, 40, 3, 10, 90, 5, 7, 8, 12, 4, 9]
# Run 2: checkpoint 0 is written at add_count 63 and starts at the buffer's first add.
RUN2 = [10, 20, 15, 6, 30, 8, 3, 12]
CUT = 6  # steps played of each run's last episode before training stops


def action_of(episode: int, step: int) -> int:
    return (episode + step) % 4


def reward_of(episode: int, step: int) -> float:
    return float((episode + step) % 3 - 1)


def play(log_dir: Path, lengths: list[int], *, cut: int | None = CUT, episode_end_indices: bool = True) -> DopamineLoggedBuffer:
    buffer = DopamineLoggedBuffer(log_dir, CAP, episode_end_indices=episode_end_indices)
    for i, steps in enumerate(lengths):
        last = i == len(lengths) - 1 and cut is not None
        played = cut if last else steps
        buffer.add_episode(i, [action_of(i, t) for t in range(played)], [reward_of(i, t) for t in range(played)], terminal=not last)
    if cut is not None:
        buffer.log_final()
    return buffer


def expected_rows(buffer: DopamineLoggedBuffer, lengths: list[int], suffixes=None) -> list[dict]:
    lengths_by_episode = dict(enumerate(lengths))
    return [e for ckpt in buffer.logged if suffixes is None or ckpt.suffix in suffixes for e in expected_episodes(ckpt, CAP, lengths_by_episode)]


def read_episodes(path: Path) -> list[dict]:
    """The converted dataset as episodes: labels of every frame, actions, rewards, end flag."""
    store = ReplayStore(path, list(read_metadata(path).games))
    episodes = []
    for end in np.flatnonzero(store.is_last_row):
        rows = np.arange(store.episode_start[end], end + 1)
        episodes.append(
            {
                "labels": [frame_label(f) for f in store.gather_frames(rows)],
                "action": store.action[rows].tolist(),
                "reward": store.reward[rows].tolist(),
                "terminal": bool(store.terminal[end]),
                "step": store.step[rows].tolist(),
            }
        )
    return episodes


def assert_episode_matches(got: dict, expected: dict) -> None:
    """Rows equal an expected episode of ``expected_episodes``: frames (padding None), actions and
    rewards of the played steps, the end flag, and steps -context .. T."""
    labels = expected["labels"]
    assert got["labels"] == labels
    assert got["action"] == [action_of(*label) if label else 0 for label in labels[:-1]] + [0]
    assert got["reward"] == [reward_of(*label) if label else 0.0 for label in labels[:-1]] + [0.0]
    assert got["terminal"] == expected["terminal"]
    assert got["step"] == list(range(-expected["context"], len(labels) - expected["context"]))


@pytest.fixture(scope="module")
def replay_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dqn_replay")
    run1 = play(root / "Pong" / "1" / "replay_logs", RUN1)
    run2 = play(root / "Pong" / "2" / "replay_logs", RUN2)
    return root, run1, run2


@pytest.fixture(scope="module")
def converted(replay_root, tmp_path_factory):
    root, run1, run2 = replay_root
    out = tmp_path_factory.mktemp("converted") / "pong"
    meta = convert_dqn_replay(root, out, ["pong"], runs=(1, 2), progress=False, command="scaled-ql prep dqn-replay test")
    return out, meta


def test_the_simulated_runs_cover_the_cases_that_matter(replay_root):
    _, run1, run2 = replay_root
    assert [c.add_count for c in run1.logged] == [127, 191, 255, 319, 383, 13]  # trigger 63 jumped; final = cursor
    assert [c.add_count for c in run2.logged][0] == 63
    assert any(c.labels[CAP - 1] == "garbage" for c in run2.logged[:1])  # np.empty slot never written
    final = run1.logged[-1]
    assert sum(isinstance(label, tuple) for label in final.labels[13:]) > 30  # stale previous-lap frames past the cursor
    assert (run1.log_dir / "episode_end_indices_ckpt.0.gz").is_file()


def test_round_trip_rows_equal_the_played_episodes(replay_root, converted):
    root, run1, run2 = replay_root
    out, meta = converted
    expected = expected_rows(run1, RUN1) + expected_rows(run2, RUN2)
    got = read_episodes(out)
    assert len(got) == len(expected) and meta.num_episodes == len(expected)
    for g, e in zip(got, expected):
        assert_episode_matches(g, e)
    # Run 2's checkpoint 0 starts at the buffer's first add: its first episode is kept whole.
    first = expected_rows(run2, RUN2, suffixes={0})[0]
    assert (first["episode"], first["steps"], first["terminal"], first["context"]) == (0, RUN2[0], True, 0)
    # The final checkpoint: it joins episode 27 in progress (3 context rows, then its last
    # transition), the episode at the cursor ends truncated at the newest frame, and nothing from
    # the stale slots behind the cursor (episodes 22-27 there) is written.
    assert [(e["episode"], e["steps"], e["terminal"], e["context"]) for e in expected_rows(run1, RUN1, suffixes={5})] == [
        (27, 1, True, 3), (28, CUT - 1, False, 0)]
    # The episodes joined in progress at a checkpoint's oldest slot are kept, with 3 context rows
    # (before, they were dropped): here every checkpoint of run 1 has one.
    joined = [e for e in expected if e["context"]]
    assert len(joined) >= len(run1.logged) and len(joined) == sum(g["step"][0] == -3 for g in got)
    assert all(label is not None for e in got for label in e["labels"][e["step"].index(0):])  # padding only in context


def test_report_card_and_metadata(converted):
    out, meta = converted
    report = read_conversion_report(out)
    assert report["skipped"] == [] and len(report["inputs"]) == 6 + len(read_run2_suffixes(out))
    first = report["inputs"][0]
    assert first["checkpoint"] == 0 and first["add_count"] == 127 and first["padding_slots"] > 0
    assert first["dropped_leading_partial"] == 0 and first["leading_context_rows"] == 3
    final = report["inputs"][5]
    assert final["fresh_slots"] == 13 and final["episodes_truncated"] == 1 and final["dropped_trailing_slots"] == 1
    card = (out / CARD_FILE).read_text()
    assert "DQN Replay Dataset" in card and "time limit" in card and "repeats its last frame" in card and "scaled-ql prep dqn-replay test" in card
    assert meta.games["Pong"]["steps"] == sum(i["transitions"] for i in report["inputs"])
    assert meta.games["Pong"]["context_rows"] == sum(i["leading_context_rows"] for i in report["inputs"])


def read_run2_suffixes(out: Path) -> list[int]:
    return read_conversion_report(out)["settings"]["selected_checkpoints"]["Pong/2"]


def test_converted_dataset_opens_in_the_store_and_samples(converted):
    out, _ = converted
    store = ReplayStore(out, ["Pong"])
    batch = Sampler(store, 16, n_step=3, seed=1).sample()
    assert batch.obs.shape == (16, 4, 84, 84)
    for stack in batch.obs:  # stacks are consecutive steps of one episode, zero-filled before step 0
        labels = [frame_label(f) for f in stack]
        real = [label for label in labels if label is not None]
        assert labels[: 4 - len(real)] == [None] * (4 - len(real))
        assert all(a[0] == real[0][0] and a[1] == real[0][1] + k for k, a in enumerate(real))


def test_a_checkpoint_saved_mid_lap_is_read_oldest_first_across_the_wrap(tmp_path):
    logs = tmp_path / "Breakout" / "1" / "replay_logs"
    lengths = [7, 11, 5, 9, 14, 3, 8, 6, 12, 10, 4, 9]
    buffer = play(logs, lengths, cut=None, episode_end_indices=False)
    for file in logs.iterdir():
        file.unlink()
    buffer.save(99)  # Dopamine's own checkpointing: true add_count, cursor mid-buffer
    add_count = int(buffer.add_count)
    assert add_count > CAP and add_count % CAP not in (0, CAP - 1)
    ckpt = LoggedCheckpoint(99, add_count, list(buffer.labels))
    expected = expected_episodes(ckpt, CAP, dict(enumerate(lengths)))
    cursor = add_count % CAP
    assert any(len({buffer.labels.index(e["labels"][0]) < cursor, buffer.labels.index(e["labels"][-2]) < cursor}) == 2
               for e in expected if not e["context"]), "an episode spans the wrap"
    convert_dqn_replay(tmp_path, tmp_path / "out", ["Breakout"], checkpoints=[99], progress=False)
    got = read_episodes(tmp_path / "out")
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_episode_matches(g, e)


def test_first_fraction_and_checkpoints_choose_checkpoints(replay_root, tmp_path):
    root, run1, _ = replay_root
    convert_dqn_replay(root, tmp_path / "first", ["Pong"], first_fraction=0.5, progress=False)  # 3 of 6
    report = read_conversion_report(tmp_path / "first")
    assert [i["checkpoint"] for i in report["inputs"]] == [0, 1, 2]
    assert [len(e["labels"]) for e in read_episodes(tmp_path / "first")] == [len(e["labels"]) for e in expected_rows(run1, RUN1, {0, 1, 2})]
    assert "the first 0.5 of each run's checkpoints" in (tmp_path / "first" / CARD_FILE).read_text()
    convert_dqn_replay(root, tmp_path / "chosen", ["Pong"], checkpoints=[3, 1], progress=False)
    got = read_episodes(tmp_path / "chosen")
    for g, e in zip(got, expected_rows(run1, RUN1, {1, 3}), strict=True):
        assert_episode_matches(g, e)
    with pytest.raises(ValueError, match="either checkpoints or first_fraction"):
        convert_dqn_replay(root, tmp_path / "both", ["Pong"], checkpoints=[1], first_fraction=0.2, progress=False)
    with pytest.raises(ValueError, match="sample_fraction"):
        convert_dqn_replay(root, tmp_path / "bad", ["Pong"], sample_fraction=0.0, progress=False)


def test_sample_fraction_takes_exact_counts_of_whole_episodes(replay_root, tmp_path):
    root, run1, _ = replay_root
    convert_dqn_replay(root, tmp_path / "a", ["Pong"], sample_fraction=0.5, seed=3, progress=False)
    convert_dqn_replay(root, tmp_path / "b", ["Pong"], sample_fraction=0.5, seed=3, progress=False)
    convert_dqn_replay(root, tmp_path / "c", ["Pong"], sample_fraction=0.5, seed=4, progress=False)
    got = read_episodes(tmp_path / "a")
    assert got == read_episodes(tmp_path / "b") and got != read_episodes(tmp_path / "c")
    by_ckpt = {c.suffix: expected_episodes(c, CAP, dict(enumerate(RUN1))) for c in run1.logged}
    owner = {e["labels"][e["context"]]: (suffix, e) for suffix, eps in by_ckpt.items() for e in eps}  # first transition's frame
    taken = {suffix: 0 for suffix in by_ckpt}
    cut = {suffix: 0 for suffix in by_ckpt}
    for g in got:
        context = -g["step"][0]
        suffix, full = owner[g["labels"][context]]
        steps = len(g["labels"]) - 1 - context
        if steps == full["steps"]:
            assert_episode_matches(g, full)
        else:  # the one episode cut to reach the exact count: a truncated prefix
            assert steps < full["steps"]
            prefix = full["labels"][: context + steps + 1]
            assert_episode_matches(g, {**full, "labels": prefix, "terminal": False})
            cut[suffix] += 1
        taken[suffix] += steps
    for suffix, eps in by_ckpt.items():
        assert taken[suffix] == round_half_up(0.5 * sum(e["steps"] for e in eps)) and cut[suffix] <= 1
    report = read_conversion_report(tmp_path / "a")
    assert [i["sampled_transitions"] for i in report["inputs"]] == [taken[s] for s in sorted(by_ckpt)]
    assert "sample (seed 3) of 0.5" in (tmp_path / "a" / CARD_FILE).read_text()


def test_the_pickled_episode_end_indices_file_is_never_opened(replay_root, tmp_path, monkeypatch):
    root, _, _ = replay_root
    opened = []
    real_open = gzip.open

    def spy(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the converter unpickled something")

    monkeypatch.setattr(gzip, "open", spy)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    convert_dqn_replay(root, tmp_path / "out", ["Pong"], checkpoints=[0, 1], progress=False)
    assert "$store$_observation_ckpt.0.gz" in opened
    assert not [name for name in opened if name.startswith("episode_end_indices")]


# ----------------------------------------------------------------------------------------------
# Bad input: every case names the file; skip_bad converts the rest and lists what it skipped


def _rewrite(path: Path, array, **kwargs) -> None:
    save_npy_gz(path, array, **kwargs)


def _load(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        return np.load(f, allow_pickle=False)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_padding_frame(logs: Path) -> None:
    obs = _load(logs / "$store$_observation_ckpt.2.gz").copy()
    terminal = _load(logs / "$store$_terminal_ckpt.2.gz")
    after = int(np.flatnonzero(terminal[: CAP - 8])[1]) + 1  # a padding slot after a terminal
    obs[after, 5, 5] = 1
    _rewrite(logs / "$store$_observation_ckpt.2.gz", obs)


BAD_INPUTS = {
    "truncated gzip": ("$store$_reward_ckpt.2.gz", lambda logs: _truncate(logs / "$store$_reward_ckpt.2.gz"), "truncated gzip"),
    "truncated frames": ("$store$_observation_ckpt.2.gz", lambda logs: _truncate(logs / "$store$_observation_ckpt.2.gz"), "truncated gzip"),
    "wrong dtype": ("$store$_action_ckpt.2.gz", lambda logs: _rewrite(logs / "$store$_action_ckpt.2.gz", _load(logs / "$store$_action_ckpt.2.gz").astype(np.float32)), "expected int32"),
    "wrong frame shape": ("$store$_observation_ckpt.2.gz", lambda logs: _rewrite(logs / "$store$_observation_ckpt.2.gz", _load(logs / "$store$_observation_ckpt.2.gz")[:, :, :80]), r"expected observations uint8 \[capacity, 84, 84\]"),
    "mismatched lengths": ("$store$_terminal_ckpt.2.gz", lambda logs: _rewrite(logs / "$store$_terminal_ckpt.2.gz", _load(logs / "$store$_terminal_ckpt.2.gz")[:-1]), "equal lengths"),
    "missing file": ("$store$_terminal_ckpt.2.gz", lambda logs: (logs / "$store$_terminal_ckpt.2.gz").unlink(), "incomplete"),
    # Writes a pickled object array as a hostile input; the converter must refuse it unopened.
    "pickled object array": ("$store$_reward_ckpt.2.gz", lambda logs: _rewrite(logs / "$store$_reward_ckpt.2.gz", np.array([{"evil": 1}] * CAP, dtype=object), allow_pickle=True), "pickled or object array"),
    "NaN reward": ("$store$_reward_ckpt.2.gz", lambda logs: _rewrite(logs / "$store$_reward_ckpt.2.gz", np.where(np.arange(CAP) == 10, np.nan, _load(logs / "$store$_reward_ckpt.2.gz")).astype(np.float32)), "must be finite"),
    "add_count off the cursor": ("invalid_range_ckpt.2.gz", lambda logs: _rewrite(logs / "add_count_ckpt.2.gz", np.array(250)), "does not surround the cursor"),
    "add_count not 0-d": ("add_count_ckpt.2.gz", lambda logs: _rewrite(logs / "add_count_ckpt.2.gz", np.array([255])), "0-d"),
    "padding not zero": ("$store$_observation_ckpt.2.gz", lambda logs: _corrupt_padding_frame(logs), "zero padding frame"),
}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    play(root / "Pong" / "1" / "replay_logs", RUN1, episode_end_indices=False)
    return root


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_the_file_and_skip_bad_converts_the_rest(case, clean_run, tmp_path):
    culprit, corrupt, problem = BAD_INPUTS[case]
    root = tmp_path / "root"
    shutil.copytree(clean_run, root)
    logs = root / "Pong" / "1" / "replay_logs"
    suffixes = sorted({int(p.name.split(".")[-2]) for p in logs.iterdir()})
    assert 2 in suffixes and len(suffixes) >= 4
    corrupt(logs)
    with pytest.raises(DatasetFormatError, match=problem) as err:
        convert_dqn_replay(root, tmp_path / "out", ["Pong"], progress=False)
    assert culprit in str(err.value)
    assert not (tmp_path / "out").exists()

    with pytest.warns(SkippedInputWarning, match=r"1 bad input\(s\) skipped"):
        convert_dqn_replay(root, tmp_path / "out", ["Pong"], skip_bad=True, progress=False)
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert len(report["skipped"]) == 1 and culprit in report["skipped"][0]["file"] and problem.split("\\")[0] in report["skipped"][0]["problem"]
    assert [i["checkpoint"] for i in report["inputs"]] == [s for s in suffixes if s != 2]
    clean = tmp_path / "clean"
    convert_dqn_replay(clean_run, clean, ["Pong"], checkpoints=[s for s in suffixes if s != 2], progress=False)
    assert read_episodes(tmp_path / "out") == read_episodes(clean)  # nothing of the bad checkpoint was written


def test_nothing_to_convert_and_unknown_games_are_errors(clean_run, tmp_path):
    with pytest.raises(DatasetFormatError, match="no folder for game 'Breakout'"):
        convert_dqn_replay(clean_run, tmp_path / "out", ["Breakout"], progress=False)
    with pytest.raises(DatasetFormatError, match="unknown game"):
        convert_dqn_replay(clean_run, tmp_path / "out", ["NotAGame"], progress=False)
    with pytest.raises(DatasetFormatError, match="incomplete"):
        convert_dqn_replay(clean_run, tmp_path / "out", ["Pong"], checkpoints=[40], progress=False)
    with pytest.raises(DatasetFormatError, match=r"nothing to convert(.|\n)*1 bad input\(s\) skipped(.|\n)*ckpt.40.gz"):
        convert_dqn_replay(clean_run, tmp_path / "out", ["Pong"], checkpoints=[40], skip_bad=True, progress=False)
    assert not (tmp_path / "out").exists()


def dopamine_transitions(ckpt: LoggedCheckpoint, lengths: list[int], stack_size: int = 4) -> list[tuple]:
    """What Dopamine's sampler can return from ``ckpt`` (``is_valid_transition``): a slot at least
    ``stack_size - 1`` after the oldest one (its invalid range after the cursor), not the newest
    (its next frame is not stored; the converter does keep a terminal transition there, which needs
    no next frame, so it is counted here too), with no terminal among the ``stack_size - 1`` slots
    before it; as (stack labels, action, reward, terminal), padding frames None."""
    from tests.formats import chronological_labels

    labels = [label if isinstance(label, tuple) else None for label in chronological_labels(ckpt, CAP)]
    ended = [label is not None and label[1] == lengths[label[0]] - 1 and label != (len(lengths) - 1, CUT - 1)
             for label in labels]
    out = []
    for i in range(stack_size - 1, len(labels)):
        if i == len(labels) - 1 and not ended[i]:  # the newest slot: its next frame is not stored
            continue
        if any(ended[i - stack_size + 1 : i]) or labels[i] is None:
            continue
        out.append((tuple(labels[i - stack_size + 1 : i + 1]), action_of(*labels[i]), reward_of(*labels[i]), ended[i]))
    return out


def test_every_transition_dopamine_samples_is_converted_and_nothing_else(replay_root, converted):
    """Including those of the episode each checkpoint joins in progress (its first 3 rows are
    context: real frames in the stacks, never transition starts)."""
    from collections import Counter

    _, run1, run2 = replay_root
    out, _ = converted
    expected = Counter(t for run, lengths in ((run1, RUN1), (run2, RUN2)) for ckpt in run.logged
                       for t in dopamine_transitions(ckpt, lengths))
    store = ReplayStore(out, ["Pong"])
    batch = Sampler(store, 2, n_step=1, seed=0).batch_at(store.valid_starts(0))
    got = Counter((tuple(frame_label(f) for f in stack), int(a), float(r), bool(d == 0))
                  for stack, a, r, d in zip(batch.obs, batch.action, batch.reward, batch.discount))
    assert got == expected
