"""Writers of tiny files in the exact formats of the offline Atari datasets, for tests.

They are written from the formats' own code (see shared/reference/offline-atari-data-formats.md),
independently of the readers in ``data_prep``:

* :class:`DopamineLoggedBuffer`: Dopamine's ``OutOfGraphReplayBuffer`` as batch_rl's
  ``OutOfGraphLoggedReplayBuffer`` logs it, add by add: K - 1 zero padding slots before each
  episode, ``add_count`` / ``invalid_range`` kept as Dopamine keeps them, a checkpoint written
  whenever ``add_count % capacity == capacity - 1`` (after the whole ``add``, padding
  included), ``log_final`` with ``add_count`` set to the cursor, ``np.empty``-like garbage in
  never-written slots, and (optionally) the pickled ``episode_end_indices`` file of newer
  Dopamine. Every slot also carries a label (episode, step) / "pad" / "garbage" that the
  tests use as ground truth; labels are not written.
* RL Unplugged: TFRecord framing with masked CRC32C (a plain table CRC here), GZIP
  compression, ``tf.train.Example`` protobuf encoding, PNG frames (Pillow), transition
  records (stacked ``o_t`` / ``o_tp1``) and episode records.

Frames encode where they come from (:func:`labelled_frame` / :func:`frame_label`), so a test
can check any converted row against its source.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FRAME_SHAPE = (84, 84)


def labelled_frame(episode: int, step: int, shape=FRAME_SHAPE) -> np.ndarray:
    """A non-zero frame that says (episode, step): pixel [0, 0] = episode + 1, [0, 1:3] = step."""
    frame = np.full(shape, 7, dtype=np.uint8)
    frame[0, 0] = episode + 1
    frame[0, 1], frame[0, 2] = divmod(step, 256)
    frame[1 + step % (shape[0] - 1), :] = 200  # some structure, so PNGs differ in size
    return frame


def frame_label(frame: np.ndarray) -> tuple[int, int] | None:
    """(episode, step) of a :func:`labelled_frame`, None for an all-zero frame."""
    if not frame.any():
        return None
    episode, step = int(frame[0, 0]) - 1, int(frame[0, 1]) * 256 + int(frame[0, 2])
    assert np.array_equal(frame, labelled_frame(episode, step, frame.shape)), "not a labelled frame"
    return episode, step


# ----------------------------------------------------------------------------------------------
# DQN Replay (Dopamine logged replay buffer)

def save_npy_gz(path: Path, array, **save_kwargs) -> None:
    """What Dopamine's ``save`` does: ``np.save`` into a ``GzipFile``."""
    with gzip.open(path, "wb") as f:
        np.save(f, array, allow_pickle=save_kwargs.pop("allow_pickle", False), **save_kwargs)


@dataclass
class LoggedCheckpoint:
    suffix: int
    add_count: int
    """As written (the final checkpoint's is the cursor)."""
    labels: list
    """Label of every slot at logging time."""


class DopamineLoggedBuffer:
    """Dopamine's circular replay buffer with batch_rl's logging, writing ``log_dir``."""

    def __init__(self, log_dir: str | Path, capacity: int, *, stack_size: int = 4, update_horizon: int = 1, frame_shape=FRAME_SHAPE, episode_end_indices: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.capacity, self.stack_size, self.update_horizon = capacity, stack_size, update_horizon
        # np.empty: whatever memory held. Make it visible garbage (non-zero frames, NaN rewards).
        self.store = {
            "observation": np.full((capacity, *frame_shape), 0xEE, dtype=np.uint8),
            "action": np.full(capacity, 77, dtype=np.int32),
            "reward": np.full(capacity, np.nan, dtype=np.float32),
            "terminal": np.full(capacity, 9, dtype=np.uint8),
        }
        self.labels: list = ["garbage"] * capacity
        self.add_count = np.array(0)
        self.invalid_range = np.zeros(stack_size)
        self.episode_end_indices: set[int] = set()
        self.write_episode_end_indices = episode_end_indices
        self.log_count = 0
        self.logged: list[LoggedCheckpoint] = []

    def cursor(self) -> int:
        return int(self.add_count % self.capacity)

    def add(self, observation, action: int, reward: float, terminal: bool, label) -> None:
        """``OutOfGraphLoggedReplayBuffer.add``: Dopamine's add, then log when the buffer is full."""
        if self.add_count == 0 or self.store["terminal"][self.cursor() - 1] == 1:
            for _ in range(self.stack_size - 1):
                self._add(np.zeros_like(self.store["observation"][0]), 0, 0.0, 0, "pad")
        self._add(observation, action, reward, int(terminal), label)
        if self.add_count % self.capacity == self.capacity - 1:
            self._log()

    def _add(self, observation, action, reward, terminal, label) -> None:
        cursor = self.cursor()
        self.store["observation"][cursor] = observation
        self.store["action"][cursor] = action
        self.store["reward"][cursor] = reward
        self.store["terminal"][cursor] = terminal
        self.labels[cursor] = label
        self.episode_end_indices.discard(cursor)
        if terminal:
            self.episode_end_indices.add(cursor)
        self.add_count += 1
        c, h = self.cursor(), self.update_horizon
        self.invalid_range = np.array([(c - h + i) % self.capacity for i in range(self.stack_size + h)])

    def add_episode(self, episode: int, actions, rewards, terminal: bool = True) -> None:
        """All steps of an episode; step t's frame is ``labelled_frame(episode, t)``."""
        for t, (a, r) in enumerate(zip(actions, rewards)):
            self.add(labelled_frame(episode, t, self.store["observation"].shape[1:]), a, r, terminal and t == len(actions) - 1, (episode, t))

    def _log(self) -> None:
        self.save(self.log_count)
        self.logged.append(LoggedCheckpoint(self.log_count, int(self.add_count), list(self.labels)))
        self.log_count += 1

    def log_final(self) -> None:
        """``log_final_buffer``: write with ``add_count`` temporarily set to the cursor."""
        add_count = self.add_count
        self.add_count = np.array(self.cursor())
        self._log()
        self.add_count = add_count

    def save(self, suffix: int) -> None:
        for key, array in self.store.items():
            save_npy_gz(self.path("$store$_" + key, suffix), array)
        save_npy_gz(self.path("add_count", suffix), self.add_count)
        save_npy_gz(self.path("invalid_range", suffix), self.invalid_range)
        if self.write_episode_end_indices:  # newer Dopamine: not an ndarray, so pickled
            with gzip.open(self.path("episode_end_indices", suffix), "wb") as f:
                pickle.dump(self.episode_end_indices, f)

    def path(self, name: str, suffix: int) -> Path:
        return self.log_dir / f"{name}_ckpt.{suffix}.gz"


def chronological_labels(ckpt: LoggedCheckpoint, capacity: int) -> list:
    """The labels of a checkpoint's fresh slots, oldest first (the reader's documented order)."""
    if ckpt.add_count < capacity:
        return ckpt.labels[: ckpt.add_count]
    cursor = ckpt.add_count % capacity
    return ckpt.labels[cursor:] + ckpt.labels[:cursor]


def expected_episodes(ckpt: LoggedCheckpoint, capacity: int, episode_lengths: dict[int, int], stack_size: int = 4) -> list[dict]:
    """The episodes the converter must write for ``ckpt``, from labels alone, each as
    ``{"labels": frame label of every row, "terminal", "context": context rows, "episode", "steps"}``
    (padding frames labelled None; ``episode`` and ``steps``: the episode and transitions).

    The episode running at the file's oldest slot (unless the file starts at the buffer's first
    add) began earlier: its first ``stack_size - 1`` slots are context rows (Dopamine never starts
    a transition there: they are its invalid range after the cursor) and its transitions follow,
    up to its terminal step, or to the newest slot (truncated), when it has one. Every later
    episode whose step 0 is in the file is kept: whole and terminal if its last step is there,
    else (it runs into the newest slot) truncated after its last stored transition, when it has one.
    """
    labels = [label if isinstance(label, tuple) else None for label in chronological_labels(ckpt, capacity)]
    clean = ckpt.suffix == 0 and ckpt.add_count < capacity
    is_end = [lab is not None and lab[1] == episode_lengths[lab[0]] - 1 for lab in labels]
    out, pos, context = [], 0, stack_size - 1
    if not clean:
        lead_end = is_end.index(True) if True in is_end else None
        last = len(labels) - 1 if lead_end is None else lead_end
        steps = last - context + (1 if lead_end is not None else 0)
        if steps >= 1:
            rows = labels[: last + 1] + ([labels[last]] if lead_end is not None else [])
            out.append({"labels": rows, "terminal": lead_end is not None, "context": context,
                        "episode": labels[context][0], "steps": steps})
        if lead_end is None:
            return out
        pos = lead_end + 1
    runs: dict[int, list[int]] = {}
    order: list[int] = []
    for label in labels[pos:]:
        if label is not None:
            if label[0] not in runs:
                order.append(label[0])
                runs[label[0]] = []
            runs[label[0]].append(label[1])
    for episode in order:
        steps = runs[episode]
        if steps[0] != 0:
            continue
        complete = steps[-1] == episode_lengths[episode] - 1
        n = len(steps) if complete else len(steps) - 1
        if n >= 1:
            final = (episode, n - 1) if complete else (episode, n)  # terminal: the last frame repeated
            out.append({"labels": [(episode, t) for t in range(n)] + [final], "terminal": complete, "context": 0,
                        "episode": episode, "steps": n})
    return out


# ----------------------------------------------------------------------------------------------
# RL Unplugged: CRC32C, TFRecord, tf.train.Example, PNG


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the plain table way (slow; fine for test files)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_bytes(records: list[bytes], *, bad_data_crc_at: int | None = None) -> bytes:
    """TFRecord framing: uint64 length, masked crc32c(length), data, masked crc32c(data)."""
    out = io.BytesIO()
    for i, data in enumerate(records):
        length = struct.pack("<Q", len(data))
        crc = masked_crc32c(data) ^ (1 if i == bad_data_crc_at else 0)
        out.write(length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", crc))
    return out.getvalue()


def write_tfrecord(path: str | Path, records: list[bytes], *, compression: str | None = "GZIP", bad_data_crc_at: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tfrecord_bytes(records, bad_data_crc_at=bad_data_crc_at)
    if compression == "GZIP":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement, 10 bytes
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + (_varint(len(payload)) + payload if wire_type == 2 else payload)


def encode_example(features: dict[str, tuple[str, list]]) -> bytes:
    """Serialize a ``tf.train.Example``; ``features[name] = (kind, values)``, kind in bytes/float/int64.

    Example{features=1: Features{feature=1: map<string, Feature>}}, Feature oneof
    {bytes_list=1, float_list=2, int64_list=3}, each list ``repeated value = 1`` (floats and
    ints packed, as TensorFlow writes them).
    """
    entries = b""
    for name, (kind, values) in features.items():
        if kind == "bytes":
            inner = b"".join(_field(1, 2, bytes(v)) for v in values)
            feature = _field(1, 2, inner)
        elif kind == "float":
            feature = _field(2, 2, _field(1, 2, np.asarray(values, dtype="<f4").tobytes()) if len(values) else b"")
        elif kind == "int64":
            feature = _field(3, 2, _field(1, 2, b"".join(_varint(int(v)) for v in values)) if len(values) else b"")
        else:
            raise ValueError(kind)
        entries += _field(1, 2, _field(1, 2, name.encode()) + _field(2, 2, feature))
    return _field(1, 2, entries)


def png(frame: np.ndarray, compress_level: int = 6) -> bytes:
    """A grayscale PNG (``tf.image.encode_png`` of an [H, W, 1] uint8 frame gives mode L)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.asarray(frame, dtype=np.uint8), mode="L").save(out, format="PNG", compress_level=compress_level)
    return out.getvalue()


@dataclass
class RluEpisode:
    """An episode as ground truth: frames [T + 1, H, W] (the last the final observation)."""

    episode_id: int
    frames: np.ndarray
    actions: list[int]
    rewards: list[float]
    terminal: bool
    extras: dict = field(default_factory=dict)


def make_episode(index: int, steps: int, terminal: bool = True, episode_id: int | None = None, repeat: tuple[int, int] | None = None) -> RluEpisode:
    """Labelled frames; ``repeat=(a, b)`` makes frames a..b identical (so stacks repeat)."""
    frames = np.stack([labelled_frame(index, t) for t in range(steps + 1)])
    if repeat is not None:
        frames[repeat[0] : repeat[1] + 1] = frames[repeat[0]]
    actions = [(index + t) % 4 for t in range(steps)]
    rewards = [float((t % 3) - 1) * (0.5 if t % 2 else 2.0) for t in range(steps)]
    return RluEpisode(episode_id if episode_id is not None else 1000 + index, frames, actions, rewards, terminal)


def stack(frames: np.ndarray, t: int, k: int = 4) -> list[np.ndarray]:
    """Frames t-k+1..t, oldest first, zeros before the episode's first frame."""
    return [frames[j] if j >= 0 else np.zeros_like(frames[0]) for j in range(t - k + 1, t + 1)]


def transition_examples(ep: RluEpisode, compress_level: int = 6) -> list[bytes]:
    """One RL Unplugged transition record per step of ``ep`` (o_t, a_t, r_t, d_t, o_tp1, a_tp1, episode_id, episode_return)."""
    steps = len(ep.actions)
    ret = float(np.clip(ep.rewards, -1, 1).sum())
    records = []
    for t in range(steps):
        records.append(
            encode_example(
                {
                    "o_t": ("bytes", [png(f, compress_level) for f in stack(ep.frames, t)]),
                    "a_t": ("int64", [ep.actions[t]]),
                    "r_t": ("float", [ep.rewards[t]]),
                    "d_t": ("float", [0.0 if ep.terminal and t == steps - 1 else 1.0]),
                    "o_tp1": ("bytes", [png(f, compress_level) for f in stack(ep.frames, t + 1)]),
                    "a_tp1": ("int64", [ep.actions[t + 1] if t + 1 < steps else 0]),
                    "episode_id": ("int64", [ep.episode_id]),
                    "episode_return": ("float", [ret]),
                }
            )
        )
    return records


def episode_example(ep: RluEpisode, checkpoint_idx: int = 0) -> bytes:
    """One record of ``atari_episodes_ordered``: T + 1 single frames; the last step holds the final
    observation (its action and rewards are filler) and discount 0 when the episode terminated."""
    steps = len(ep.actions)
    clipped = list(np.clip(ep.rewards, -1, 1))
    discounts = [1.0] * (steps + 1)
    if ep.terminal:
        discounts[-1] = 0.0
    return encode_example(
        {
            "checkpoint_idx": ("int64", [checkpoint_idx]),
            "episode_idx": ("int64", [ep.episode_id]),
            "episode_return": ("float", [float(sum(ep.rewards))]),
            "clipped_episode_return": ("float", [float(sum(clipped))]),
            "observations": ("bytes", [png(f) for f in ep.frames]),
            "actions": ("int64", list(ep.actions) + [3]),
            "unclipped_rewards": ("float", list(ep.rewards) + [5.0]),
            "clipped_rewards": ("float", clipped + [1.0]),
            "discounts": ("float", discounts),
        }
    )


EXAMPLE_PROTO = """
syntax = "proto3";
package tensorflow;
message BytesList { repeated bytes value = 1; }
message FloatList { repeated float value = 1 [packed = true]; }
message Int64List { repeated int64 value = 1 [packed = true]; }
message Feature { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
message Features { map<string, Feature> feature = 1; }
message Example { Features features = 1; }
"""
"""tensorflow/core/example/{example,feature}.proto, reduced to the messages (for reference)."""


def protobuf_example_class():
    """``tensorflow.Example`` built with the protobuf runtime (no TensorFlow), or None."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        return None
    fd = descriptor_pb2.FileDescriptorProto(name="scaled_ql_test_example.proto", package="tensorflow", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto

    def message(name, *fields, options=None):
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, type_name, oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if oneof is not None:
                f.oneof_index = oneof
        return m

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", ("value", 1, F.TYPE_BYTES, rep, None, None))
    message("FloatList", ("value", 1, F.TYPE_FLOAT, rep, None, None))
    message("Int64List", ("value", 1, F.TYPE_INT64, rep, None, None))
    feature = message(
        "Feature",
        ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".tensorflow.BytesList", 0),
        ("float_list", 2, F.TYPE_MESSAGE, opt, ".tensorflow.FloatList", 0),
        ("int64_list", 3, F.TYPE_MESSAGE, opt, ".tensorflow.Int64List", 0),
    )
    feature.oneof_decl.add(name="kind")
    features = message("Features", ("feature", 1, F.TYPE_MESSAGE, rep, ".tensorflow.Features.FeatureEntry", None))
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=".tensorflow.Feature")
    entry.options.map_entry = True
    message("Example", ("features", 1, F.TYPE_MESSAGE, opt, ".tensorflow.Features", None))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))
