"""Dataset cards (``README.md`` with the Hub's YAML front matter): of an Arrow dataset folder and of
its Parquet shards, with the behaviour policy's returns per game."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from huggingface_hub import DatasetCard, DatasetCardData

from scaled_ql.data.schema import FORMAT_NAME, METADATA_FILE, DatasetMetadata
from scaled_ql.data.shards import ALL_CONFIG, DATA_DIR, PARQUET_FORMAT, PARQUET_METADATA_FILE, PARQUET_VERSION, SPLIT


def return_stats(values) -> dict[str, float]:
    """``return_mean``, ``return_std``, ``return_min`` and ``return_max`` of episode returns."""
    return {"return_mean": float(np.mean(values)), "return_std": float(np.std(values)),
            "return_min": float(np.min(values)), "return_max": float(np.max(values))}


def add_episode_returns(returns: dict[str, list[float]], table: pa.Table, ends: np.ndarray) -> None:
    """Append the undiscounted raw return of every episode of ``table`` (whole episodes, ending
    at rows ``ends``) to ``returns[game]``: the behaviour policy's returns, for the card."""
    ids = np.asarray(table["episode_id"])
    unique, inverse = np.unique(ids, return_inverse=True)
    sums = np.bincount(inverse.reshape(-1), weights=np.asarray(table["reward"], dtype=np.float64), minlength=len(unique))
    games = np.asarray(table["game"].take(pa.array(ends)).to_pylist(), dtype=object)
    for game, value in zip(games.tolist(), sums[np.searchsorted(unique, ids[ends])].tolist()):
        returns.setdefault(game, []).append(value)


def value_counts(column) -> dict[str, int]:
    counts = pc.value_counts(column)
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def _return_text(stats: Mapping[str, Any]) -> str:
    if "return_mean" not in stats:
        return "n/a"
    return f"{stats['return_mean']:.2f} +/- {stats['return_std']:.2f} (min {stats['return_min']:g}, max {stats['return_max']:g})"


def render_card(meta: DatasetMetadata) -> str:
    """The dataset card (README.md) of an Arrow dataset folder, as text."""
    return str(dataset_card(meta))


def dataset_card(meta: DatasetMetadata) -> DatasetCard:
    """The dataset card of an Arrow dataset folder: ``huggingface_hub``'s ``DatasetCard`` with the
    Hub's metadata (task, tags, the ``default`` config over the Arrow files) and the provenance."""
    data = DatasetCardData(task_categories=["reinforcement-learning"], tags=["atari", "offline-rl", "scaled_ql"],
                           pretty_name=f"scaled_ql offline Atari dataset ({', '.join(meta.games)})",
                           configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data-*.arrow"}]}])
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n" + _card_body(meta))


def _card_body(meta: DatasetMetadata) -> str:
    c = meta.collection
    env = c.get("env", {})
    lines = [
        "",
        "# Offline Atari dataset (scaled_ql format)",
        "",
        f"Written by `scaled_ql` (format `{FORMAT_NAME}` version {meta.format_version}). "
        "Open it with `datasets.load_from_disk(folder)` or `scaled_ql.data.store.ReplayStore(folder, games)`.",
        "",
        "## Games",
        "",
        "| game | agent steps | episodes | rows | behaviour return (mean +/- std over episodes) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {g} | {v['steps']} | {v['episodes']} | {v['rows']} | {_return_text(v)} |" for g, v in meta.games.items()]
    variants = [f"{g} is {v['game']} in ALE mode {v['mode']}, difficulty {v['difficulty']}" for g, v in meta.games.items() if "mode" in v]
    if variants:
        lines += ["Game variants: " + "; ".join(variants) + ".", ""]
    lines += [f"| **total** | {sum(int(v['steps']) for v in meta.games.values())} | {meta.num_episodes} | {meta.num_rows} | |", ""]
    lines += ["## How it was made", ""]
    if c:
        policy = c.get("policy", "?")
        if policy == "epsilon_greedy":
            policy = f"epsilon-greedy around the Q-network of checkpoint `{c.get('checkpoint', '')}`"
        elif policy == "random":
            policy = "uniformly random over the game's action set"
        elif policy == "scripted":
            policy = ("a scripted controller reading object positions from the Atari RAM (`data_prep.scripted`), "
                      f"with a uniformly random action with probability {c.get('epsilon', '?')}")
        elif policy == "mixed":
            policy = (f"mixed quality: {c.get('good_fraction', '?')} of the environments play a scripted controller reading "
                      "object positions from the Atari RAM (`data_prep.scripted`), the others a poor controller that reads "
                      "the same RAM and does the wrong thing; both with a uniformly random action with probability "
                      f"{c.get('epsilon', '?')}. Per part: "
                      + "; ".join(f"{g}: " + ", ".join(f"{k} {v.get('return_mean', float('nan')):.1f} over {v.get('episodes', 0)} episodes"
                                                        for k, v in ps.items()) for g, ps in c.get("parts", {}).items()))
        lines += [
            f"- Source: {c.get('source', '?')}",
            f"- Behaviour policy: {policy}",
            f"- Epsilon: {c.get('epsilon', '?')}",
            f"- Seed: {c.get('seed', '?')}",
        ] + ([f"- Agent steps per game (budget, over all environments): {c['steps_per_game']} with {c.get('num_envs', '?')} parallel environments"]
             if c.get("steps_per_game") else []) + [
            f"- Protocol: {env.get('emulator', 'ALE v5 (ale_py)')}, "
            f"sticky actions {env.get('sticky_action_prob', '?')}, frameskip {env.get('frameskip', '?')} with max-pooling of the last two frames, "
            f"{env.get('frame_size', '?')}x{env.get('frame_size', '?')} grayscale, episode cap {env.get('max_episode_frames', 'not recorded')} frames"
            + (f", extra truncation after {c['max_episode_steps']} agent steps" if c.get("max_episode_steps") else "")
            + f", {'full' if env.get('full_action_space') else 'minimal'} action set"
            + (f", up to {env['noop_max']} no-op starts" if env.get("noop_max") else ", no no-op starts")
            + (", fire reset" if env.get("fire_reset") else ", no fire reset")
            + (", episodic life" if env.get("episodic_life") else ", no episodic life"),
            f"- Rewards: {env.get('rewards', 'raw, as the emulator returned them (not clipped)')}",
            "",
            "Command:",
            "",
            "```",
            c.get("command", "") or "(not recorded)",
            "```",
        ]
    else:
        lines.append("(no collection information recorded)")
    lines += [
        "",
        "## Format",
        "",
        f"One row per step with a single uint8 frame of shape {list(meta.frame_shape)} (frames are not stacked; "
        "the sampler stacks 4 at sample time, zero-filled before an episode's first frame). "
        "Columns: `frame`, `action` (int32), `reward` (float32, as recorded: see Rewards above), `terminal`, `truncated`, "
        "`episode_id` (int64, unique), `step` (int32), `game` (string).",
        "",
        "Row convention (RLDS-like): an episode of T agent steps is T + 1 contiguous rows. Row t holds the observation "
        "before action t, action t and reward r_t. The last row holds the final observation with action 0 and reward 0, "
        "and is marked `terminal` (game over) or `truncated` (time limit or collection budget: bootstrap from it).",
    ]
    if any(v.get("context_rows") for v in meta.games.values()):
        lines[-1] += (" Rows with a negative `step` are context rows of an episode joined in progress (its start was not "
                      "recorded): their frames fill the frame stacks of the rows after them, and no transition starts at one.")
    lines += [
        "",
        f"`{METADATA_FILE}` lists the row and episode counts per game and the sha256 of every Arrow file; "
        "scaled_ql verifies them when it opens the folder.",
        "",
    ]
    return "\n".join(lines)


def render_parquet_card(meta: DatasetMetadata, parquet_meta: dict[str, Any]) -> str:
    """Dataset card of a Parquet folder: the Arrow card's games table and provenance, with Hub
    ``configs`` (``all`` plus one per game) and the Parquet layout."""
    source = dataset_card(meta)
    front, body = source.data, source.text
    front.configs = [
        {"config_name": ALL_CONFIG, "default": True, "data_files": [{"split": SPLIT, "path": f"{DATA_DIR}/*/{SPLIT}-*.parquet"}]},
        *({"config_name": g, "data_files": [{"split": SPLIT, "path": f"{DATA_DIR}/{g}/{SPLIT}-*.parquet"}]} for g in parquet_meta["games"]),
    ]
    front.size_categories = [_size_category(parquet_meta["rows"])]
    sections = {s.split("\n", 1)[0]: "## " + s for s in body.split("\n## ")[1:]}  # heading -> text
    h, w = parquet_meta["frame_shape"]
    kept = [sections[k] for k in ("Games", "How it was made") if k in sections]
    lines = [
        "",
        "# Offline Atari dataset (scaled_ql format, Parquet)",
        "",
        f"Written by `scaled_ql` (format `{PARQUET_FORMAT}` version {PARQUET_VERSION}) from a `{FORMAT_NAME}` folder. "
        "One config per game and `all` (the default):",
        "",
        "```python",
        "from datasets import load_dataset",
        'pong = load_dataset("<repo id or folder>", "Pong", split="train")            # or streaming=True',
        'frames = np.frombuffer(pong[0]["frame"], np.uint8).reshape(' f"{h}, {w})",
        "```",
        "",
        "For training, stream it: `scaled-ql pretrain ... data.path=<repo id or folder>` reads each process's own shards "
        "(`scaled_ql.data.streaming.StreamingSampler`); or convert it back to the memory-mapped Arrow format with "
        "`scaled-ql data import-parquet` (`scaled_ql.data.parquet.import_parquet`).",
        "",
        *[s.rstrip() + "\n" for s in kept],
        "## Files",
        "",
        f"`{DATA_DIR}/<Game>/{SPLIT}-XXXXX-of-YYYYY.parquet`: each shard holds whole episodes of one game, rows in order "
        f"(about {parquet_meta['rows_per_shard']} rows a shard, row groups of {parquet_meta['row_group_rows']} rows, "
        f"{parquet_meta['compression']} compression). `{PARQUET_METADATA_FILE}` lists every shard's game, rows, episodes, "
        "bytes and sha256 (`scaled_ql.data.parquet.verify_parquet` checks them).",
        "",
        "| game | shards | agent steps | episodes | rows |",
        "|---|---:|---:|---:|---:|",
        *[f"| {g} | {v['shards']} | {v['steps']} | {v['episodes']} | {v['rows']} |" for g, v in parquet_meta["games"].items()],
        "",
        "## Format",
        "",
        f"One row per step. `frame`: the {h}x{w} uint8 grayscale observation as {h * w} raw bytes, row-major "
        "(frames are single, not stacked: stack 4 at sample time, zero-filled before an episode's first frame). "
        "`action` (int32), `reward` (float32, as stored by the source), `terminal`, `truncated`, `episode_id` (int64, unique), "
        "`step` (int32), `game` (string).",
        "",
        "Row convention (RLDS-like): an episode of T agent steps is T + 1 contiguous rows. Row t holds the observation "
        "before action t, action t and reward r_t. The last row holds the final observation with action 0 and reward 0, "
        "and is marked `terminal` (game over) or `truncated` (time limit or collection budget: bootstrap from it).",
        "",
    ]
    return str(DatasetCard(f"---\n{front.to_yaml()}\n---\n" + "\n".join(lines)))


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")):
        if rows < limit:
            return name
    return "1B<n<10B"
