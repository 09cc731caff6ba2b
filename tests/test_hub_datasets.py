"""JAT-format Hub datasets -> scaled_ql rows, against tiny local datasets written with ``datasets``
in exactly jat-project/jat-dataset's Atari format: one row per episode, ``Sequence(Image())`` of
RGBA PNGs whose 4 channels are envpool's 4-frame stack (oldest first), ``Sequence(int64)``
actions, ``Sequence(float32)`` rewards. The stacks are made as envpool makes them (see
``envpool_stacks``). No test touches the network (``no_network`` blocks sockets)."""

from __future__ import annotations

import json
import socket
import warnings

import numpy as np
import pytest
from PIL import Image as PILImage

from data_prep.conversion import REPORT_FILE, SkippedInputWarning, read_conversion_report
from data_prep.hub_datasets import convert_hub_dataset, game_of_config, jat_config_name, resolve_configs
from data_prep.jat_episodes import episode_segments
from scaled_ql.data.schema import CARD_FILE, DatasetFormatError, read_metadata
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.store import ReplayStore


def counts(meta) -> dict:
    """Rows, episodes and steps per game (the metadata also holds the behaviour returns)."""
    return {g: {k: v[k] for k in ("rows", "episodes", "steps")} for g, v in meta.games.items()}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def jat_features():
    from datasets import Features, Image, Sequence, Value

    # As in huggingface/jat data/envs/atari/create_atari_dataset.py
    return Features({"image_observations": Sequence(Image()), "discrete_actions": Sequence(Value("int64")), "rewards": Sequence(Value("float32"))})


def make_frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (84, 84), dtype=np.uint8)


def envpool_stacks(frames: list[np.ndarray], events: dict[int, str] | None = None) -> list[np.ndarray]:
    """The (84, 84, 4) observations envpool gives while the frames ``frames`` are seen: a game
    start fills all 4 slots (push_all); each step pushes its frame at the back (channel 3) and
    drops the oldest. ``events[t] == "life"``: a life was lost before step t, and envpool's reset
    pushed one more frame (never seen alone); ``"reset"``: a new game starts at t (time limit)."""
    events = events or {}
    stacks, buf = [], []
    for t, frame in enumerate(frames):
        if t == 0 or events.get(t) == "reset":
            buf = [frame] * 4
        else:
            if events.get(t) == "life":
                buf = buf[1:] + [make_frame(10_000 + t)]
            buf = buf[1:] + [frame]
        stacks.append(np.stack(buf, axis=-1))
    return stacks


class Episode:
    def __init__(self, seed: int, steps: int, num_actions: int, events: dict[int, str] | None = None) -> None:
        self.frames = [make_frame(seed * 1000 + t) for t in range(steps)]
        self.stacks = envpool_stacks(self.frames, events)
        self.actions = [(seed + t) % num_actions for t in range(steps)]
        self.rewards = [float((seed + t) % 3 - 1) * (4.0 if t == 1 else 1.0) for t in range(steps)]  # raw, one unclipped value

    def images(self):
        return [PILImage.fromarray(s) for s in self.stacks]  # (84, 84, 4) uint8 -> RGBA, as JAT does


def jat_dataset(episodes: list[Episode], images=None):
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "image_observations": images if images is not None else [e.images() for e in episodes],
            "discrete_actions": [e.actions for e in episodes],
            "rewards": [e.rewards for e in episodes],
        },
        features=jat_features(),
    )


PONG = [Episode(1, 5, 6), Episode(2, 3, 6, {2: "life"}), Episode(3, 7, 6, {3: "life", 5: "life"})]
BREAKOUT = [Episode(4, 4, 4), Episode(5, 6, 4, {3: "reset"}), Episode(6, 2, 4)]


@pytest.fixture(scope="module")
def jat_root(tmp_path_factory):
    """Two configs as a local copy: atari-pong saved with save_to_disk (train and test splits),
    atari-breakout as Hub-named Parquet files."""
    from datasets import DatasetDict

    root = tmp_path_factory.mktemp("jat")
    DatasetDict({"train": jat_dataset(PONG), "test": jat_dataset(PONG[:1])}).save_to_disk(str(root / "atari-pong"))
    (root / "atari-breakout").mkdir()
    jat_dataset(BREAKOUT).to_parquet(str(root / "atari-breakout" / "train-00000-of-00001-63e5e90c0f02e375.parquet"))
    return root


def stored_episodes(path):
    """(game, frames, actions, rewards, terminal) of every episode of a converted dataset, in order."""
    meta = read_metadata(path)
    store = ReplayStore(path, list(meta.games))
    out = []
    for end in np.flatnonzero(store.is_last_row):
        rows = np.arange(store.episode_start[end], end + 1)
        game = store.games[store.game_id[end]]
        out.append((game, store.gather_frames(rows), store.action[rows].tolist(), store.reward[rows].tolist(), bool(store.terminal[end])))
    return out


def expected_terminal(ep: Episode, start: int = 0):
    """A JAT row's part from ``start`` to game over: every step kept, last frame repeated."""
    frames = ep.frames[start:] + [ep.frames[-1]]
    return frames, ep.actions[start:] + [0], [float(np.float32(r)) for r in ep.rewards[start:]] + [0.0], True


def assert_episode(got, game, frames, actions, rewards, terminal):
    assert got[0] == game
    assert np.array_equal(got[1], np.stack(frames))
    assert got[2] == actions and got[3] == rewards and got[4] == terminal


# ----------------------------------------------------------------------------------------------
# Round trip


def test_converts_both_local_forms_and_the_sampler_draws_from_them(jat_root, tmp_path):
    out = tmp_path / "out"
    meta = convert_hub_dataset(jat_root, out, ["Pong", "Breakout"], progress=False, command="scaled-ql prep hub")
    # Pong: 3 rows -> 3 terminal episodes. Breakout: row 1 has a game reset at step 3 -> 4 episodes.
    assert counts(meta)["Pong"] == {"rows": 5 + 3 + 7 + 3, "episodes": 3, "steps": 15}
    assert counts(meta)["Breakout"] == {"rows": 5 + (3 + 4) + 3, "episodes": 4, "steps": 4 + 2 + 3 + 2}

    got = stored_episodes(out)
    assert len(got) == 7
    for g, ep in zip(got[:3], PONG):  # life losses never split a row
        assert_episode(g, "Pong", *expected_terminal(ep))
    assert_episode(got[3], "Breakout", *expected_terminal(BREAKOUT[0]))
    cut = BREAKOUT[1]  # new game at step 3: steps 0..1 kept, frame 2 is the (real) final observation
    assert_episode(got[4], "Breakout", cut.frames[:3], cut.actions[:2] + [0], [float(r) for r in cut.rewards[:2]] + [0.0], False)
    assert_episode(got[5], "Breakout", *expected_terminal(cut, start=3))
    assert_episode(got[6], "Breakout", *expected_terminal(BREAKOUT[2]))
    assert any(abs(r) == 4.0 for e in got for r in e[3])  # rewards raw, not clipped

    report = read_conversion_report(out)
    pong, breakout = report["inputs"]
    assert pong["config"] == "atari-pong" and pong["rows_read"] == 3 and pong["life_loss_resets"] == 3 and pong["game_resets_split"] == 0
    assert pong["frames"] == "stack" and pong["stack_breaks"] == 0 and pong["rows_not_starting_at_reset"] == 0
    assert breakout["game_resets_split"] == 1 and breakout["dropped_transitions"] == 1 and breakout["episodes_truncated"] == 1
    assert pong["rewards_look_clipped"] is False
    assert report["skipped"] == []
    card = (out / CARD_FILE).read_text()
    assert f"local dataset '{jat_root}' config atari-pong" in card and "scaled-ql prep hub" in card
    assert "repeats its last frame" in meta.collection["source"]

    store = ReplayStore(out, ["Pong", "Breakout"])
    batch = Sampler(store, 8, n_step=3, seed=0).sample()
    assert batch.obs.shape == (8, 4, 84, 84) and batch.obs.dtype == np.uint8
    assert batch.game.tolist() == [0] * 4 + [1] * 4 and set(batch.action.tolist()) <= set(range(6))


def test_hub_repo_id_is_streamed_with_the_config_name(jat_root, tmp_path, monkeypatch):
    import datasets

    calls = []
    real_load = datasets.load_dataset

    def fake_load_dataset(path, name=None, split=None, streaming=False, revision=None, **kwargs):
        calls.append({"path": path, "name": name, "split": split, "streaming": streaming, "revision": revision})
        if path != "jat-project/jat-dataset":
            return real_load(path, name=name, split=split, streaming=streaming, **kwargs)
        return datasets.load_from_disk(str(jat_root / name))[split].to_iterable_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    meta = convert_hub_dataset("jat-project/jat-dataset", tmp_path / "out", None, config_names=["atari-pong"], split="test", revision="abc123", progress=False)
    assert calls == [{"path": "jat-project/jat-dataset", "name": "atari-pong", "split": "test", "streaming": True, "revision": "abc123"}]
    assert counts(meta) == {"Pong": {"rows": 6, "episodes": 1, "steps": 5}}
    assert "Hugging Face Hub jat-project/jat-dataset/atari-pong (split test, revision abc123" in meta.collection["source"]


def test_single_config_path_grayscale_frames_and_max_episodes(tmp_path):
    eps = [Episode(7, 4, 6), Episode(8, 5, 6), Episode(9, 3, 6)]
    gray = [[PILImage.fromarray(f) for f in e.frames] for e in eps]  # mode L: already single frames
    jat_dataset(eps, images=gray).to_parquet(str(tmp_path / "pong.parquet"))
    meta = convert_hub_dataset(tmp_path / "pong.parquet", tmp_path / "out", ["pong"], max_episodes=2, progress=False)
    assert counts(meta) == {"Pong": {"rows": 5 + 6, "episodes": 2, "steps": 9}}
    got = stored_episodes(tmp_path / "out")
    for g, ep in zip(got, eps):
        assert_episode(g, "Pong", *expected_terminal(ep))
    assert read_conversion_report(tmp_path / "out")["inputs"][0]["frames"] == "single"


def test_rows_are_not_split_when_asked(jat_root, tmp_path):
    meta = convert_hub_dataset(jat_root, tmp_path / "out", ["Breakout"], split_resets=False, progress=False)
    assert counts(meta)["Breakout"] == {"rows": 5 + 7 + 3, "episodes": 3, "steps": 12}
    assert all(e[4] for e in stored_episodes(tmp_path / "out"))


# ----------------------------------------------------------------------------------------------
# Configs and games


def test_config_names_and_games():
    assert jat_config_name("MontezumaRevenge") == "atari-montezumarevenge"
    assert jat_config_name("kung_fu_master") == "atari-kungfumaster"
    assert jat_config_name("UpNDown") == "atari-upndown" and jat_config_name("ALE/Pong-v5") == "atari-pong"
    assert game_of_config("atari-privateeye") == "PrivateEye" and game_of_config("atari-mspacman") == "MsPacman"
    assert resolve_configs(None, ["atari-pong", "atari-breakout"]) == [("atari-pong", "Pong"), ("atari-breakout", "Breakout")]
    assert resolve_configs(["pong"], ["atari-pong"]) == [("atari-pong", "Pong")]
    with pytest.raises(ValueError, match=r"do not match"):
        resolve_configs(["Breakout"], ["atari-pong"])
    with pytest.raises(ValueError, match=r"both game Pong"):
        resolve_configs(None, ["atari-pong", "atari-Pong"])
    with pytest.raises(ValueError, match="needs games or config_names"):
        resolve_configs(None, None)


def test_unknown_or_non_atari_configs_are_refused_by_name(jat_root, tmp_path):
    with pytest.raises(DatasetFormatError, match=r"config 'atari-notagame': unknown game 'notagame'"):
        convert_hub_dataset(jat_root, tmp_path / "out", None, config_names=["atari-notagame"], progress=False)
    with pytest.raises(DatasetFormatError, match=r"config 'mujoco-ant' is not an Atari config"):
        convert_hub_dataset(jat_root, tmp_path / "out", None, config_names=["mujoco-ant"], progress=False)
    with pytest.raises(DatasetFormatError, match=r"no dataset for config 'atari-qbert'"):
        convert_hub_dataset(jat_root, tmp_path / "out", ["Qbert", "Pong"], progress=False)
    with pytest.raises(DatasetFormatError, match=r"no split 'validation' \(found splits \['test', 'train'\]\)"):
        convert_hub_dataset(jat_root, tmp_path / "out", ["Pong"], split="validation", progress=False)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Bad input


def test_missing_column_is_named(tmp_path):
    ds = jat_dataset(PONG[:1]).remove_columns("rewards")
    ds.save_to_disk(str(tmp_path / "atari-pong"))
    with pytest.raises(DatasetFormatError, match=r"config 'atari-pong'.*missing column 'rewards'"):
        convert_hub_dataset(tmp_path, tmp_path / "out", ["Pong"], progress=False)


def test_frames_that_cannot_be_mapped_are_refused_or_skipped(tmp_path):
    eps = [Episode(11, 3, 6), Episode(12, 4, 6), Episode(13, 2, 6)]
    images = [e.images() for e in eps]
    images[1][2] = PILImage.fromarray(np.zeros((64, 64, 4), np.uint8))  # wrong size
    images[2][0] = PILImage.fromarray(np.zeros((84, 84, 3), np.uint8))  # RGB: colour or 3 frames? refused
    jat_dataset(eps, images=images).save_to_disk(str(tmp_path / "src" / "atari-pong"))

    with pytest.raises(DatasetFormatError, match=r"src/atari-pong' \(config 'atari-pong'\), row 1, step 2: column 'image_observations' holds an image of mode RGBA and shape \[64, 64, 4\]"):
        convert_hub_dataset(tmp_path / "src", tmp_path / "out", ["Pong"], progress=False)
    assert not (tmp_path / "out").exists()

    with pytest.warns(SkippedInputWarning, match="2 bad input"):
        meta = convert_hub_dataset(tmp_path / "src", tmp_path / "out", ["Pong"], skip_bad=True, progress=False)
    assert counts(meta) == {"Pong": {"rows": 4, "episodes": 1, "steps": 3}}
    assert_episode(stored_episodes(tmp_path / "out")[0], "Pong", *expected_terminal(eps[0]))
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    assert [s["file"].rsplit(", ", 1)[-1] for s in report["skipped"]] == ["row 1", "row 2"]
    assert "shape [84, 84, 3]" in report["skipped"][1]["problem"]
    assert report["inputs"][0]["rows_read"] == 3 and report["inputs"][0]["rows_skipped"] == 2


def where(step_note: str = "") -> str:
    return "test config 'atari-pong', row 0" + step_note


def test_episode_checks_name_the_column():
    ep = Episode(21, 4, 6)
    png = ep.images()
    with pytest.raises(DatasetFormatError, match=r"different lengths: 'image_observations' 4, 'discrete_actions' 3, 'rewards' 4"):
        episode_segments(png, ep.actions[:3], ep.rewards, where(), 6)
    with pytest.raises(DatasetFormatError, match=r"column 'discrete_actions'.*step 2 has action 6, outside the game's 6 actions"):
        episode_segments(png, [0, 1, 6, 2], ep.rewards, where(), 6)
    with pytest.raises(DatasetFormatError, match=r"step 3: column 'rewards' has nan"):
        episode_segments(png, ep.actions, [0.0, 1.0, 0.0, float("nan")], where(), 6)
    with pytest.raises(DatasetFormatError, match="empty episode"):
        episode_segments([], [], [], where(), 6)
    with pytest.raises(DatasetFormatError, match=r"step 1: column 'image_observations' holds bytes that are not a readable image"):
        episode_segments([png[0], {"bytes": b"not a png", "path": None}, png[2], png[3]], ep.actions, ep.rewards, where(), 6)
    reversed_stacks = [PILImage.fromarray(s[..., ::-1].copy()) for s in Episode(22, 6, 6).stacks]  # newest frame first
    with pytest.raises(DatasetFormatError, match=r"overlap newest-first in 5 of 5 steps"):
        episode_segments(reversed_stacks, ep.actions + [0, 0], ep.rewards + [0, 0], where(), 6)
    rng = np.random.default_rng(0)
    colour = [PILImage.fromarray(rng.integers(0, 256, (84, 84, 4), dtype=np.uint8)) for _ in range(4)]
    with pytest.raises(DatasetFormatError, match="do not look like a frame stack"):
        episode_segments(colour, ep.actions, ep.rewards, where(), 6)
    segments, counts = episode_segments(png, ep.actions, ep.rewards, where(), 6)
    assert len(segments) == 1 and segments[0][3] is True and counts["stack_breaks"] == 0
    assert segments[0][1].dtype == np.int32 and segments[0][2].dtype == np.float32


def test_games_must_be_given_and_output_is_protected(jat_root, tmp_path):
    with pytest.raises(ValueError, match="max_episodes"):
        convert_hub_dataset(jat_root, tmp_path / "out", ["Pong"], max_episodes=0, progress=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("keep")
    with pytest.raises(FileExistsError):
        convert_hub_dataset(jat_root, tmp_path / "out", ["Pong"], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DatasetFormatError, match="neither an existing local path nor a Hub repo id"):
            convert_hub_dataset("/no/such/../folder here", tmp_path / "out2", ["Pong"], progress=False)
