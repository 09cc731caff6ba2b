"""RL Unplugged Atari TFRecords -> scaled_ql rows, against files written byte for byte in the
released format by tests/formats.py (TFRecord framing, masked CRC-32C, tf.train.Example, PNG)."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from data_prep.conversion import REPORT_FILE, SkippedInputWarning, read_conversion_report
from data_prep.rl_unplugged import convert_rl_unplugged
from data_prep.tfrecord import crc32c_many, mask_crc, parse_example, read_tfrecords
from scaled_ql.data.schema import DatasetFormatError
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore
from tests import formats
from tests.formats import episode_example, frame_label, make_episode, transition_examples, write_tfrecord


def stored_episodes(path):
    """(labels, actions, rewards, terminal) of every episode of a converted dataset, in order."""
    store = ReplayStore(path, list(json.loads((path / "scaled_ql_dataset.json").read_text())["games"]))
    out = []
    for end in np.flatnonzero(store.is_last_row):
        rows = np.arange(store.episode_start[end], end + 1)
        out.append(([frame_label(f) for f in store.gather_frames(rows)], store.action[rows].tolist(), store.reward[rows].tolist(), bool(store.terminal[end])))
    return out


def truth(ep, steps=None):
    """What the converter must write for ``ep`` (its first ``steps`` transitions, truncated, if given)."""
    n = len(ep.actions) if steps is None else steps
    labels = [frame_label(f) for f in ep.frames[: n + 1]]
    rewards = [float(np.float32(r)) for r in ep.rewards[:n]]
    return labels, list(ep.actions[:n]) + [0], rewards + [0.0], ep.terminal and steps is None


# ----------------------------------------------------------------------------------------------
# CRC-32C, TFRecord framing, tf.train.Example


def test_crc32c_matches_the_standard_and_a_plain_table_crc():
    assert int(crc32c_many([b"123456789"])[0]) == 0xE3069283  # the CRC-32C check value
    rng = np.random.default_rng(0)
    buffers = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 3, 4, 5, 8, 1023, 1024, 1025, 3000, 20000)]
    for lane in (4, 64, 1024):
        assert crc32c_many(buffers, lane=lane).tolist() == [formats.crc32c(b) for b in buffers]
    assert mask_crc(crc32c_many(buffers)).tolist() == [formats.masked_crc32c(b) for b in buffers]


def test_example_wire_format_agrees_with_the_protobuf_runtime():
    features = {"o_t": ("bytes", [b"\x89PNG", b""]), "r_t": ("float", [0.5, -1.0]), "episode_id": ("int64", [-3, 2**62]), "empty": ("int64", [])}
    parsed = parse_example(formats.encode_example(features))
    assert parsed["o_t"] == ("bytes", [b"\x89PNG", b""])
    assert parsed["r_t"][0] == "float" and parsed["r_t"][1].tolist() == [0.5, -1.0]
    assert parsed["episode_id"][1].tolist() == [-3, 2**62] and parsed["empty"][1].tolist() == []
    example_class = formats.protobuf_example_class()
    assert example_class is not None, "protobuf (installed with tensorboard) is needed for this cross-check"
    message = example_class()
    message.ParseFromString(formats.encode_example(features))  # our test writer is a valid Example
    assert list(message.features.feature["episode_id"].int64_list.value) == [-3, 2**62]
    message = example_class()
    message.features.feature["a_t"].int64_list.value.extend([5, -7])
    message.features.feature["o_t"].bytes_list.value.extend([b"ab", b"c"])
    message.features.feature["d_t"].float_list.value.append(0.0)
    parsed = parse_example(message.SerializeToString())  # and the reader reads protobuf's bytes
    assert parsed["a_t"][1].tolist() == [5, -7] and parsed["o_t"][1] == [b"ab", b"c"] and parsed["d_t"][1].tolist() == [0.0]


def test_tfrecord_crc_and_truncation_are_detected(tmp_path):
    records = [bytes([i]) * (100 * i + 1) for i in range(5)]
    assert list(read_tfrecords(write_tfrecord(tmp_path / "ok", records))) == records
    assert list(read_tfrecords(write_tfrecord(tmp_path / "plain", records, compression=None))) == records
    with pytest.raises(DatasetFormatError, match=r"'.*bad_crc': record 3 .*data CRC mismatch"):
        list(read_tfrecords(write_tfrecord(tmp_path / "bad_crc", records, bad_data_crc_at=3)))
    raw = formats.tfrecord_bytes(records)
    flipped = bytearray(raw)
    flipped[12 + 1 + 4 + 12 + 5] ^= 0x40  # a data byte of record 1
    with gzip.open(tmp_path / "flipped", "wb") as f:
        f.write(bytes(flipped))
    with pytest.raises(DatasetFormatError, match="record 1 .*data CRC mismatch"):
        list(read_tfrecords(tmp_path / "flipped"))
    (tmp_path / "cut").write_bytes(raw[:-10])
    with pytest.raises(DatasetFormatError, match="'.*cut': record 4 .*truncated"):
        list(read_tfrecords(tmp_path / "cut"))
    data = (tmp_path / "ok").read_bytes()
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match="cut.gz': truncated gzip"):
        list(read_tfrecords(tmp_path / "cut.gz"))


# ----------------------------------------------------------------------------------------------
# Transition shards


@pytest.fixture(scope="module")
def transition_shards(tmp_path_factory):
    """Pong run 1 in two shards, records shuffled within each:
    shard 0: episodes 0 (terminal), 1 (truncated: no d_t == 0), 2 (terminal, frames 3..8
    identical so stacks repeat) and the first 5 steps of episode 3; shard 1: the rest of
    episode 3 and episode 4 (terminal, one step)."""
    root = tmp_path_factory.mktemp("rlu") / "atari" / "Pong"
    eps = [make_episode(0, 9), make_episode(1, 6, terminal=False), make_episode(2, 12, repeat=(3, 8)), make_episode(3, 11, episode_id=2**63 + 5), make_episode(4, 1)]
    shard0 = [r for e in eps[:3] for r in transition_examples(e)] + transition_examples(eps[3])[:5]
    shard1 = transition_examples(eps[3])[5:] + transition_examples(eps[4])
    random.Random(0).shuffle(shard0)
    random.Random(1).shuffle(shard1)
    write_tfrecord(root / "run_1-00000-of-00002", shard0)
    write_tfrecord(root / "run_1-00001-of-00002", shard1)
    return root.parent, eps


def test_transitions_are_rebuilt_into_episodes(transition_shards, tmp_path):
    root, eps = transition_shards
    meta = convert_rl_unplugged(str(root / "Pong" / "run_1-*"), tmp_path / "out", progress=False)
    got = stored_episodes(tmp_path / "out")
    assert got[0] == truth(eps[0]) and got[1] == truth(eps[1]) and got[4] == truth(eps[4])
    assert got[1][3] is False  # no d_t == 0: truncated, its final row the real next frame
    assert got[3] == truth(eps[3], steps=5)  # split over two shards: the part with step 0, truncated
    # Episode 2's repeated stacks: the loops may be ordered differently, but every transition
    # is exactly as stored (same frames, stacks, action, reward) and the episode is complete.
    labels, actions, rewards, terminal = got[2]
    expected = truth(eps[2])
    assert terminal and len(labels) == len(expected[0]) and labels[:4] == expected[0][:4] and labels[-1] == expected[0][-1]
    assert sorted(zip(actions, rewards)) == sorted(zip(expected[1], expected[2]))
    assert meta.num_episodes == 5
    report = read_conversion_report(tmp_path / "out")
    shard0, shard1 = report["inputs"]
    assert shard0["variant"] == "transitions" and shard0["records"] == 9 + 6 + 12 + 5 and shard0["transitions"] == 32 and shard0["dropped_without_first_step"] == 0
    assert shard1["dropped_without_first_step"] == 6 and shard1["transitions"] == 1 and shard1["episodes_terminal"] == 1
    assert shard0["episode_return_mismatch"] == 0 and shard0["pixel_keys"] == 0


def test_stacks_of_rebuilt_episodes_equal_the_stored_stacks(transition_shards, tmp_path):
    root, eps = transition_shards
    convert_rl_unplugged(root, tmp_path / "out", games=["Pong"], progress=False)
    store = ReplayStore(tmp_path / "out", ["Pong"])
    stored = {}  # every (o_t, a_t, r_t, o_tp1) of the files, by labels
    for ep in eps:
        for t in range(len(ep.actions)):
            o_t = tuple(frame_label(f) for f in formats.stack(ep.frames, t))
            o_tp1 = tuple(frame_label(f) for f in formats.stack(ep.frames, t + 1))
            stored.setdefault(o_t, set()).add((ep.actions[t], float(np.float32(ep.rewards[t])), o_tp1))
    batch = Sampler(store, 32, n_step=1, gamma=0.9, reward_clip=0, seed=0).sample()
    for obs, action, reward, next_obs in zip(batch.obs, batch.action, batch.reward, batch.next_obs):
        key = tuple(frame_label(f) for f in obs)
        assert (int(action), float(reward), tuple(frame_label(f) for f in next_obs)) in stored[key]


def test_pngs_with_different_bytes_for_one_frame_fall_back_to_pixels(tmp_path):
    ep = make_episode(0, 7)
    records = [transition_examples(ep, compress_level=level)[t] for t, level in zip(range(7), [0, 9, 1, 9, 0, 6, 9])]
    write_tfrecord(tmp_path / "Breakout" / "run_2-00000-of-00001", records[::-1])
    convert_rl_unplugged(tmp_path / "Breakout", tmp_path / "out", progress=False)
    assert stored_episodes(tmp_path / "out") == [truth(ep)]
    assert read_conversion_report(tmp_path / "out")["inputs"][0]["pixel_keys"] == 1


# ----------------------------------------------------------------------------------------------
# Episode shards


def test_episode_records_become_rows(tmp_path):
    eps = [make_episode(0, 10), make_episode(1, 4, terminal=False), make_episode(2, 1)]
    eps[0].rewards[2] = 7.0  # unclipped rewards are kept
    write_tfrecord(tmp_path / "atari_episodes_ordered" / "Breakout" / "run_1-00000-of-00050", [episode_example(e) for e in eps])
    convert_rl_unplugged(tmp_path / "atari_episodes_ordered", tmp_path / "out", progress=False)
    assert stored_episodes(tmp_path / "out") == [truth(e) for e in eps]
    entry = read_conversion_report(tmp_path / "out")["inputs"][0]
    assert entry["variant"] == "episodes" and entry["episodes_terminal"] == 2 and entry["episodes_truncated"] == 1


# ----------------------------------------------------------------------------------------------
# Bad input


def _bad_transition(field, value):
    ep = make_episode(5, 3)
    records = transition_examples(ep)
    parsed = parse_example(records[1])
    features = {k: (kind, list(v)) for k, (kind, v) in parsed.items()}
    features[field] = value
    if value is None:
        del features[field]
    records[1] = formats.encode_example(features)
    return records


BAD_SHARDS = {
    "CRC mismatch": (lambda path: write_tfrecord(path, transition_examples(make_episode(5, 3)), bad_data_crc_at=2), "record 2 .*data CRC mismatch"),
    "missing feature": (lambda path: write_tfrecord(path, _bad_transition("d_t", None)), "record 1: missing feature 'd_t'"),
    "wrong kind": (lambda path: write_tfrecord(path, _bad_transition("a_t", ("float", [1.0]))), "record 1: feature 'a_t' is a float list, expected a int64 list"),
    "three frames": (lambda path: write_tfrecord(path, _bad_transition("o_t", ("bytes", [formats.png(np.zeros((84, 84)))] * 3))), "record 1: feature 'o_t' has 3 values, expected 4"),
    "not a PNG": (lambda path: write_tfrecord(path, _bad_transition("o_tp1", ("bytes", [b"GIF89a not a png"] * 4))), "record 1, feature 'o_tp1' value 0: not a readable PNG"),
    "RGB frame": (lambda path: write_tfrecord(path, [formats.encode_example({"observations": ("bytes", [_rgb_png()] * 2), "actions": ("int64", [0, 0]), "unclipped_rewards": ("float", [0, 0]), "clipped_rewards": ("float", [0, 0]), "discounts": ("float", [1, 0])})]), "mode RGB, expected 8-bit grayscale"),
    "action out of range": (lambda path: write_tfrecord(path, _bad_transition("a_t", ("int64", [17]))), "record 1: feature 'a_t' is 17, outside the game's 6 actions"),
    "not an Example": (lambda path: write_tfrecord(path, [b"\x0a\xff\xff\xff"]), "record 0: not a tf.train.Example"),
}


def _rgb_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (84, 84)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("case", list(BAD_SHARDS))
def test_bad_shards_name_file_and_record_and_skip_bad_converts_the_rest(case, tmp_path):
    write, problem = BAD_SHARDS[case]
    good = make_episode(0, 5)
    write_tfrecord(tmp_path / "Pong" / "run_1-00000-of-00002", transition_examples(good))
    bad = tmp_path / "Pong" / "run_1-00001-of-00002"
    write(bad)
    with pytest.raises(DatasetFormatError, match=problem) as err:
        convert_rl_unplugged(tmp_path / "Pong", tmp_path / "out", progress=False)
    assert str(bad) in str(err.value) and not (tmp_path / "out").exists()
    with pytest.warns(SkippedInputWarning, match="run_1-00001-of-00002"):
        convert_rl_unplugged(tmp_path / "Pong", tmp_path / "out", skip_bad=True, progress=False)
    assert stored_episodes(tmp_path / "out") == [truth(good)]
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert [s["file"] for s in report["skipped"]] == [str(bad)]


def test_inputs_that_name_no_shards_are_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="no such file, folder or glob match"):
        convert_rl_unplugged(str(tmp_path / "nothing-*"), tmp_path / "out", progress=False)
    write_tfrecord(tmp_path / "NotAGame" / "run_1-00000-of-00001", [])
    with pytest.raises(DatasetFormatError, match="the game is its folder's name"):
        convert_rl_unplugged(tmp_path / "NotAGame", tmp_path / "out", progress=False)
    write_tfrecord(tmp_path / "Pong" / "run_1-00000-of-00001", transition_examples(make_episode(0, 2)))
    with pytest.raises(DatasetFormatError, match=r"no files for game\(s\) \['Breakout'\]"):
        convert_rl_unplugged(tmp_path / "Pong", tmp_path / "out", games=["breakout"], progress=False)
