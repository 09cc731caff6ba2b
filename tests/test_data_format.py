"""The on-disk dataset format: round trip through Hugging Face datasets, and errors that name the culprit."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
import yaml
from fixtures import DEFAULT_EPISODES, decode_frame, episode_chunk, episode_id_of, write_synthetic_dataset

from scaled_ql.data.schema import CARD_FILE, METADATA_FILE, DatasetFormatError, read_metadata, verify_checksums
from scaled_ql.data.writer import write_dataset
from scaled_ql.data.store import ReplayStore


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("format") / "data")


def test_round_trip_through_datasets_load_from_disk(data):
    ds = datasets.load_from_disk(str(data.path))
    assert len(ds) == data.num_rows == sum(len(ep.rewards) + 1 for ep in DEFAULT_EPISODES)
    schema = ds.data.table.schema
    assert {name: str(schema.field(name).type) for name in ("action", "reward", "terminal", "truncated", "episode_id", "step", "game")} == {
        "action": "int32",
        "reward": "float",
        "terminal": "bool",
        "truncated": "bool",
        "episode_id": "int64",
        "step": "int32",
        "game": "string",
    }
    assert str(schema.field("frame").type) == "fixed_size_list<item: fixed_size_list<item: uint8>[84]>[84]"
    assert ds.features["frame"] == datasets.List(datasets.List(datasets.Value("uint8"), length=84), length=84)
    rows = ds.with_format("numpy", dtype=np.uint8)[:]
    assert rows["frame"].shape == (data.num_rows, 84, 84)
    decoded = [decode_frame(f) for f in rows["frame"]]
    assert decoded == list(zip(data.episode.tolist(), data.step.tolist()))
    rows = ds.with_format("numpy")[:]
    np.testing.assert_array_equal(rows["reward"], data.reward)  # raw, not clipped (5.0, -3.0, 7.0 survive)
    np.testing.assert_array_equal(rows["terminal"], data.terminal)
    np.testing.assert_array_equal(rows["truncated"], data.truncated)
    np.testing.assert_array_equal(rows["episode_id"], [episode_id_of(i) for i in data.episode])
    assert rows["game"].tolist() == data.game.tolist()


def test_metadata_and_card(data):
    meta = read_metadata(data.path)
    assert meta.frame_shape == (84, 84)
    counts = {g: {k: v[k] for k in ("rows", "episodes", "steps")} for g, v in meta.games.items()}
    assert counts == {"Pong": {"rows": 19, "episodes": 3, "steps": 16}, "Breakout": {"rows": 16, "episodes": 3, "steps": 13}}
    # The behaviour returns: each episode's undiscounted raw return, summarized per game.
    for game in ("Pong", "Breakout"):
        returns = [sum(ep.rewards) for ep in data.episodes if ep.game == game]
        stats = meta.games[game]
        assert stats["return_mean"] == pytest.approx(np.mean(returns)) and stats["return_std"] == pytest.approx(np.std(returns))
        assert (stats["return_min"], stats["return_max"]) == (min(returns), max(returns))
    assert [f["name"] for f in meta.files] == ["data-00000-of-00001.arrow"]
    card = (data.path / CARD_FILE).read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["task_categories"] == ["reinforcement-learning"] and {"atari", "offline-rl"} <= set(front["tags"])
    assert "| Pong | 16 | 3 | 19 | " in card and "Row convention" in card and "tests/fixtures.py" in card


def test_several_arrow_files_keep_row_order(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", max_shard_size=100_000)
    meta = read_metadata(data.path)
    assert len(meta.files) > 1
    store = ReplayStore(data.path, data.games)
    assert [decode_frame(store.frame(r)) for r in range(len(store))] == list(zip(data.episode.tolist(), data.step.tolist()))


def _flip_bytes(path, at):
    raw = bytearray(path.read_bytes())
    raw[at : at + 4] = bytes(255 - b for b in raw[at : at + 4])
    path.write_bytes(bytes(raw))


def test_corrupt_arrow_file_is_named(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data")
    arrow = data.path / read_metadata(data.path).files[0]["name"]
    _flip_bytes(arrow, arrow.stat().st_size // 2)  # inside the pixels: only the checksum can tell
    with pytest.raises(DatasetFormatError, match=f"{arrow}.*corrupt"):
        ReplayStore(data.path, data.games)
    with pytest.raises(DatasetFormatError, match=str(arrow)):
        verify_checksums(read_metadata(data.path))


def test_unreadable_arrow_file_is_named_even_without_checksums(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data")
    arrow = data.path / read_metadata(data.path).files[0]["name"]
    arrow.write_bytes(arrow.read_bytes()[:1000])
    with pytest.raises(DatasetFormatError, match=f"{arrow}.*not a readable Arrow stream"):
        ReplayStore(data.path, data.games, verify_checksums=False)


def test_missing_folder_and_missing_file_are_named(tmp_path):
    with pytest.raises(DatasetFormatError, match="nowhere.*does not exist"):
        read_metadata(tmp_path / "nowhere")
    data = write_synthetic_dataset(tmp_path / "data")
    arrow = data.path / read_metadata(data.path).files[0]["name"]
    arrow.unlink()
    with pytest.raises(DatasetFormatError, match=f"{arrow}.*missing"):
        ReplayStore(data.path, data.games)


def test_wrong_frame_shape_is_rejected(tmp_path):
    chunk = episode_chunk(0, DEFAULT_EPISODES[0], frame_shape=(84, 80))
    with pytest.raises(DatasetFormatError, match=r"'frame' must be uint8 \[rows, 84, 84\], found uint8 \[7, 84, 80\]"):
        write_dataset(tmp_path / "bad", [chunk])
    assert not (tmp_path / "bad").exists()
    # A file whose frames do not have the shape its metadata promises names the file.
    data = write_synthetic_dataset(tmp_path / "data")
    meta_path = data.path / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["frame_shape"] = [64, 64]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetFormatError, match=r"data-00000-of-00001.arrow.*'frame'.*expected uint8 frames of shape \(64, 64\)"):
        ReplayStore(data.path, data.games)


def test_unknown_game_is_named(tmp_path):
    chunk = episode_chunk(0, DEFAULT_EPISODES[0])
    chunk["game"] = np.array(["Pongg"] * len(chunk["game"]))
    with pytest.raises(DatasetFormatError, match="unknown game 'Pongg'.*did you mean 'Pong'"):
        write_dataset(tmp_path / "bad", [chunk])
    data = write_synthetic_dataset(tmp_path / "data")
    meta_path = data.path / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["games"]["NotAGame"] = meta["games"].pop("Breakout")
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetFormatError, match=f"{meta_path}.*unknown game 'NotAGame'"):
        read_metadata(data.path)


def test_game_names_are_stored_as_the_registry_spells_them(tmp_path):
    chunk = episode_chunk(0, DEFAULT_EPISODES[0])
    chunk["game"] = np.array(["pong"] * len(chunk["game"]))
    meta = write_dataset(tmp_path / "data", [chunk])
    assert list(meta.games) == ["Pong"]
    assert set(datasets.load_from_disk(str(tmp_path / "data"))["game"]) == {"Pong"}


def test_missing_column_and_broken_episodes_are_rejected(tmp_path):
    chunk = episode_chunk(0, DEFAULT_EPISODES[0])
    del chunk["truncated"]
    with pytest.raises(DatasetFormatError, match=r"missing column\(s\) \['truncated'\]"):
        write_dataset(tmp_path / "a", [chunk])
    chunk = episode_chunk(0, DEFAULT_EPISODES[0])
    chunk["terminal"][-1] = False  # the episode never ends
    with pytest.raises(DatasetFormatError, match="not an episode end"):
        write_dataset(tmp_path / "b", [chunk])
    chunk = episode_chunk(0, DEFAULT_EPISODES[0])
    chunk["step"][3] = 7
    with pytest.raises(DatasetFormatError, match="row 3 .*has step 7, expected 3"):
        write_dataset(tmp_path / "c", [chunk])
    chunk = episode_chunk(0, DEFAULT_EPISODES[0])
    chunk["reward"][-1] = 1.0
    with pytest.raises(DatasetFormatError, match="last row and must have action 0 and reward 0"):
        write_dataset(tmp_path / "d", [chunk])
    with pytest.raises(DatasetFormatError, match="episode_id .* is used by two episodes"):
        write_dataset(tmp_path / "e", [episode_chunk(0, DEFAULT_EPISODES[0]), episode_chunk(0, DEFAULT_EPISODES[1])])


def test_existing_folder_is_not_overwritten_by_accident(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data")
    with pytest.raises(FileExistsError, match="already exists"):
        write_dataset(data.path, [episode_chunk(0, DEFAULT_EPISODES[0])])
    meta = write_dataset(data.path, [episode_chunk(0, DEFAULT_EPISODES[0])], overwrite=True)
    assert meta.num_rows == len(DEFAULT_EPISODES[0].rewards) + 1 == len(datasets.load_from_disk(str(data.path)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a scaled_ql dataset"):
        write_dataset(tmp_path / "other", [episode_chunk(0, DEFAULT_EPISODES[0])], overwrite=True)
