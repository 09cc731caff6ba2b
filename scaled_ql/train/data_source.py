"""The training data of a run, chosen by ``data.path`` alone: a memory-mapped Arrow folder, or
Parquet shards streamed from a local or shared folder, a Hub dataset repo or an fsspec URL.

:func:`open_data_source` builds the training sampler, the holdout sampler and what evaluation
reads from the data; :class:`DataSource` saves and restores their state in checkpoints and
records which kind of source the run used (``"arrow"``, ``"parquet"``, ``"hub"`` or ``"url"``).
The same config runs from any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaled_ql.config import ConfigError, ExperimentConfig
from scaled_ql.data.sampler import Sampler
from scaled_ql.data.shard_source import ShardSource, resolve_location
from scaled_ql.data.shards import PARQUET_METADATA_FILE
from scaled_ql.data.store import ReplayStore
from scaled_ql.data.streaming import StreamingSampler
from scaled_ql.train.checkpoint import CheckpointError, dataset_fingerprint
from scaled_ql.train.parallel import Topology


@dataclass
class DataSource:
    kind: str
    """``arrow`` (memory-mapped), ``parquet`` (a local folder), ``hub`` or ``url`` (streamed)."""
    location: str
    sampler: Sampler | StreamingSampler
    holdout: Sampler | StreamingSampler | None
    eval_sampler: Sampler | None
    """What evaluation reads from the data (Q of the first states, the data's returns): the
    memory-mapped sampler; None when streaming (evaluation then plays, without those columns)."""
    fingerprint: dict[str, Any]

    @property
    def streaming(self) -> bool:
        return self.kind != "arrow"

    def describe(self) -> dict[str, Any]:
        """What the run records of its data: kind, location, and for a stream its shards skipped so far."""
        out: dict[str, Any] = {"kind": self.kind, "location": self.location}
        if isinstance(self.sampler, StreamingSampler):
            out["skipped_shards"] = self.sampler.skipped_shards
        return out

    def state_dict(self, sampler_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """This rank's entries of a checkpoint's ``trainer.json`` ``ranks`` list; ``sampler_state``: the
        training sampler's state to save instead of its own (the prefetch thread's, after the last batch taken)."""
        return {"sampler": sampler_state if sampler_state is not None else self.sampler.state_dict(),
                "dataset": {**self.fingerprint, "source": self.describe()},
                **({"holdout_sampler": self.holdout.state_dict()} if self.holdout is not None else {})}

    def load_state_dict(self, ranks: list[dict[str, Any]], rank: int, where: Path) -> None:
        """Restore from a checkpoint's ``ranks``: the memory-mapped index stream is global (rank 0's
        resumes any world size); a stream resumes each rank from its own entry, same world size only."""
        saved_kind = ranks[0].get("dataset", {}).get("source", {}).get("kind", "arrow")
        if (saved_kind == "arrow") != (self.kind == "arrow"):
            raise CheckpointError(f"checkpoint '{where}' was trained from a {saved_kind} source and data.path '{self.location}' is "
                                  f"a {self.kind} source: the batch order of one cannot continue in the other. Resume with the "
                                  "original kind of data.path, or start a new run (name=...)")
        entry = ranks[0]
        if self.streaming:
            if len(ranks) != self.sampler.world_size:
                raise CheckpointError(f"checkpoint '{where}' was saved by {len(ranks)} process(es), this run has "
                                      f"{self.sampler.world_size}: a streamed run resumes exactly only on the same number of "
                                      f"processes (each rank's shards and cursor are its own). Resume with {len(ranks)} processes, "
                                      "or import the shards (scaled-ql data import-parquet) and train from the Arrow folder")
            entry = ranks[rank]
        try:
            self.sampler.load_state_dict(entry["sampler"])
            if self.holdout is not None:
                self.holdout.load_state_dict(entry["holdout_sampler"])
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"checkpoint '{where}': the data stream's state could not be restored: {err}") from None

    def close(self) -> None:
        for s in (self.sampler, self.holdout):
            if isinstance(s, StreamingSampler):
                s.close()


def open_data_source(cfg: ExperimentConfig, topo: Topology) -> DataSource:
    """The samplers of ``cfg`` for this process; every bad input stops here, naming it."""
    path, expected = cfg.data.path, (cfg.env.frame_size, cfg.env.frame_size)
    kw = {"frame_stack": cfg.env.frame_stack, "rank": topo.rank, "world_size": topo.world_size}
    kind, _ = resolve_location(path)
    if kind == "parquet" and not (Path(path) / PARQUET_METADATA_FILE).is_file():  # an Arrow folder (or a path ReplayStore names)
        store = ReplayStore(path, cfg.games, ignore_extra_games=cfg.data.ignore_extra_games)
        _check_frames(cfg, tuple(store.frame_shape), expected)
        sampler = Sampler.from_config(store, cfg.data, topo.per_device_batch, seed=cfg.seed, split="train", **kw)
        holdout = None
        if cfg.data.holdout_fraction > 0:  # its own stream: drawing from it never changes the training batches
            holdout = Sampler.from_config(store, cfg.data, topo.per_device_batch, seed=cfg.seed + 1, split="holdout", **kw)
        return DataSource("arrow", str(path), sampler, holdout, sampler, dataset_fingerprint(store.metadata))
    if cfg.online.enabled:
        raise ConfigError(f"config key 'online.enabled': online fine-tuning mixes its replay with a memory-mapped dataset, but "
                          f"data.path '{path}' is streamed Parquet; import it first (scaled-ql data import-parquet) or set "
                          "online.enabled=false")
    source = ShardSource(path, retries=cfg.data.read_retries, retry_wait_s=cfg.data.retry_wait_s, check_files=not cfg.data.skip_bad_shards)
    _check_frames(cfg, source.frame_shape, expected)
    extra = [g for g in source.games if g not in cfg.games]
    if extra and not cfg.data.ignore_extra_games:
        raise ConfigError(f"data.path '{path}' holds games {extra} that are not in config key 'games' {cfg.games}; add them, "
                          "or set data.ignore_extra_games=true to leave them out")
    sampler = StreamingSampler.from_config(source, cfg.games, cfg.data, topo.per_device_batch, seed=cfg.seed, split="train", **kw)
    holdout = None
    if cfg.data.holdout_fraction > 0:
        holdout = StreamingSampler.from_config(source, cfg.games, cfg.data, topo.per_device_batch, seed=cfg.seed + 1, split="holdout", **kw)
    return DataSource(source.kind, str(path), sampler, holdout, None, source.fingerprint())


def _check_frames(cfg: ExperimentConfig, found: tuple[int, ...], expected: tuple[int, int]) -> None:
    if tuple(found) != expected:
        raise ConfigError(f"dataset '{cfg.data.path}' holds frames of shape {tuple(found)}, but config key "
                          f"'env.frame_size' expects {expected}")
