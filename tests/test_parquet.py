"""Parquet shards: Arrow -> Parquet -> Arrow round trip, loading with `datasets`, checksums, push."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from fixtures import DEFAULT_EPISODES, SyntheticEpisode, decode_frame, episode_id_of, write_synthetic_dataset

from scaled_ql.data.schema import DatasetFormatError, read_metadata
from scaled_ql.data.parquet import export_parquet, import_parquet, verify_parquet
from scaled_ql.data.shards import PARQUET_METADATA_FILE, read_parquet_metadata
from scaled_ql.hub.datasets import push_dataset
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # ~14 rows per Arrow file: episodes cross file boundaries.
    return write_synthetic_dataset(tmp_path_factory.mktemp("parquet") / "arrow", max_shard_size=100_000)


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("parquet_out") / "pq"
    report = export_parquet(data.path, out, rows_per_shard=8, row_group_rows=4)
    return out, report


def _rows(path):
    return datasets.load_from_disk(str(path)).with_format("numpy")[:]


def test_round_trip_gives_identical_rows_and_trains_unchanged(data, exported, tmp_path):
    out, _ = exported
    assert len(read_metadata(data.path).files) > 1
    back = import_parquet(out, tmp_path / "back")
    assert back.games == read_metadata(data.path).games
    assert back.collection["source"] == "synthetic test fixture"
    a, b = _rows(data.path), _rows(tmp_path / "back")
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # The store and the sampler see the same data: the same seed draws the same batches.
    s1 = Sampler(ReplayStore(data.path, data.games), 4, seed=3)
    s2 = Sampler(ReplayStore(tmp_path / "back", data.games), 4, seed=3)
    for _ in range(5):
        x, y = s1.sample(), s2.sample()
        for name in ("obs", "action", "reward", "discount", "next_obs", "game"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))


def test_layout_shards_of_whole_episodes_per_game(data, exported):
    out, report = exported
    meta = read_parquet_metadata(out)
    names = [f["name"] for f in meta["files"]]
    assert names == [
        "data/Pong/train-00000-of-00002.parquet", "data/Pong/train-00001-of-00002.parquet",
        "data/Breakout/train-00000-of-00002.parquet", "data/Breakout/train-00001-of-00002.parquet",
    ]
    # Pong episodes have 7, 3, 9 rows: the first shard closes at the first episode end >= 8 rows.
    assert [(f["rows"], f["episodes"]) for f in meta["files"]] == [(10, 2), (9, 1), (8, 2), (8, 1)]
    assert report["games"] == {"Pong": 2, "Breakout": 2} and report["rows"] == 35
    for entry in meta["files"]:
        table = pq.read_table(out / entry["name"])
        assert set(table.column("game").to_pylist()) == {entry["game"]}
        flags = np.asarray(table.column("terminal")) | np.asarray(table.column("truncated"))
        assert flags[-1] and table.column("step")[0].as_py() == 0
        assert pq.ParquetFile(out / entry["name"]).metadata.row_group(0).num_rows == 4


def test_datasets_loads_the_shards(data, exported, tmp_path):
    out, _ = exported
    files = sorted(str(p) for p in (out / "data").rglob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == data.num_rows
    assert ds.features["frame"] == datasets.Value("binary") and ds.features["episode_id"] == datasets.Value("int64")
    frames = [np.frombuffer(b, np.uint8).reshape(84, 84) for b in ds["frame"]]
    decoded = sorted(decode_frame(f) for f in frames)
    assert decoded == sorted(zip(data.episode.tolist(), data.step.tolist()))
    # The card's configs: one per game, and `all`.
    breakout = datasets.load_dataset(str(out), "Breakout", split="train", cache_dir=str(tmp_path / "cache"))
    assert set(breakout["game"]) == {"Breakout"} and len(breakout) == 16
    assert breakout["episode_id"] == [episode_id_of(i) for i in data.episode[data.game == "Breakout"]]
    assert len(datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))) == 35


def test_card_and_metadata(exported):
    out, _ = exported
    card = (out / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["task_categories"] == ["reinforcement-learning"]
    configs = {c["config_name"]: c for c in front["configs"]}
    assert configs["all"]["default"] is True
    assert configs["Pong"]["data_files"] == [{"split": "train", "path": "data/Pong/train-*.parquet"}]
    assert "| Pong | 2 | 16 | 3 | 19 |" in card and "synthetic test fixture" in card and "np.frombuffer" in card
    meta = json.loads((out / PARQUET_METADATA_FILE).read_text())
    assert meta["games"]["Breakout"] == {"rows": 16, "episodes": 3, "steps": 13, "shards": 2}
    assert all(len(f["sha256"]) == 64 for f in meta["files"])


def test_modified_or_extra_shard_fails_verification_naming_it(exported, tmp_path):
    import shutil

    out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    verify_parquet(copy)
    shard = copy / "data/Breakout/train-00001-of-00002.parquet"
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with pytest.raises(DatasetFormatError, match=r"train-00001-of-00002\.parquet' is corrupt or was modified: sha256"):
        verify_parquet(copy)
    with pytest.raises(DatasetFormatError, match="train-00001-of-00002"):
        import_parquet(copy, tmp_path / "back")
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DatasetFormatError, match=r"train-00001-of-00002\.parquet' .* bytes, expected"):
        verify_parquet(copy)
    shutil.rmtree(copy)
    shutil.copytree(out, copy)
    shutil.copy(copy / "data/Pong/train-00000-of-00002.parquet", copy / "data/Pong/train-00002-of-00002.parquet")
    with pytest.raises(DatasetFormatError, match=r"train-00002-of-00002\.parquet' is not listed"):
        verify_parquet(copy)


def test_interleaved_games_are_grouped_and_keep_their_order(tmp_path):
    episodes = (DEFAULT_EPISODES[3], DEFAULT_EPISODES[0], DEFAULT_EPISODES[4], DEFAULT_EPISODES[1], SyntheticEpisode("Breakout", (1.0, -1.0), "terminal"))
    data = write_synthetic_dataset(tmp_path / "arrow", episodes)
    export_parquet(data.path, tmp_path / "pq", rows_per_shard=1000)
    assert [f["name"] for f in read_parquet_metadata(tmp_path / "pq")["files"]] == [
        "data/Breakout/train-00000-of-00001.parquet", "data/Pong/train-00000-of-00001.parquet"]
    import_parquet(tmp_path / "pq", tmp_path / "back")
    a, b = _rows(data.path), _rows(tmp_path / "back")
    order = np.argsort(np.where(a["game"] == "Breakout", 0, 1), kind="stable")  # games grouped, rows in order
    for name in a:
        np.testing.assert_array_equal(a[name][order], b[name], err_msg=name)


def test_export_refuses_to_overwrite_and_import_picks_games(data, exported, tmp_path):
    out, _ = exported
    with pytest.raises(FileExistsError, match="already exists"):
        export_parquet(data.path, out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        export_parquet(data.path, tmp_path / "other", overwrite=True)
    meta = import_parquet(out, tmp_path / "pong", games=["pong"])
    assert list(meta.games) == ["Pong"]
    with pytest.raises(DatasetFormatError, match="has no game 'Boxing'"):
        import_parquet(out, tmp_path / "boxing", games=["Boxing"])
    with pytest.raises(DatasetFormatError, match="not a scaled_ql Parquet folder .*export it"):
        verify_parquet(data.path)


class RecordingApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, **kw):
        self.calls.append(("create_repo", kw))
        return f"https://huggingface.co/datasets/{kw['repo_id']}"

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw))
        return "https://huggingface.co/datasets/x/commit/abc"


def test_push_uploads_one_commit_and_dry_run_lists(data, exported, tmp_path):
    out, _ = exported
    api = RecordingApi()
    report = push_dataset(out, "someone/atari", private=True, api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == {"repo_id": "someone/atari", "repo_type": "dataset", "private": True, "exist_ok": True}
    upload = api.calls[1][1]
    assert upload["repo_type"] == "dataset" and upload["folder_path"] == str(out) and "2 games, 35 rows" in upload["commit_message"]
    assert report["commit"].endswith("/commit/abc")
    # An Arrow folder is exported first; a dry run uploads nothing.
    api = RecordingApi()
    report = push_dataset(data.path, "someone/atari", dry_run=True, api=api, work_dir=tmp_path / "up")
    assert api.calls == [] and report["dry_run"] is True
    assert "README.md" in report["files"] and "scaled_ql_parquet.json" in report["files"]
    assert "data/Pong/train-00000-of-00001.parquet" in report["files"]
    # A corrupt shard is never uploaded.
    shard = tmp_path / "up" / "data/Pong/train-00000-of-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    with pytest.raises(DatasetFormatError, match="train-00000-of-00001"):
        push_dataset(tmp_path / "up", "someone/atari", api=api)
    assert api.calls == []


def test_shards_that_break_the_row_convention_are_named(exported, tmp_path):
    import pyarrow as pa

    from scaled_ql.data.shards import EpisodeAssembler, iter_shard_tables, table_to_chunk

    out, _ = exported
    table = pq.read_table(out / "data/Pong/train-00000-of-00002.parquet")
    pq.write_table(table.slice(0, 5), tmp_path / "cut.parquet")  # stops inside episode 0 (7 rows)
    with pytest.raises(DatasetFormatError, match=r"cut\.parquet': ends inside an episode \(5 rows of episode_id 1000"):
        list(iter_shard_tables(tmp_path / "cut.parquet", (84, 84)))
    short = table.set_column(0, "frame", pa.array([b"\x01" * 100] * table.num_rows, pa.binary()))
    with pytest.raises(DatasetFormatError, match=r"shard X: frame of row 0 .* has 100 bytes, expected 7056"):
        table_to_chunk(short, (84, 84), "shard X")
    games = table.column("game").to_pylist()
    games[3] = "Breakout"
    mixed = table.set_column(table.schema.get_field_index("game"), "game", pa.array(games))
    with pytest.raises(DatasetFormatError, match=r"row 3 \(episode_id 1000\) changes game within an episode \('Breakout' after 'Pong'\)"):
        EpisodeAssembler("mixed").push(mixed)
