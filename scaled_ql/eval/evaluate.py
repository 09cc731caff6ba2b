"""Evaluation in ALE: epsilon-greedy episodes of a policy, per-game scores and aggregates.

The evaluator knows nothing of models. A policy is a callable
``policy(obs, game_id) -> actions``: ``obs`` is uint8 ``[N, frame_stack, H, W]`` from the
vector environment and ``actions`` the greedy action index ``[N]`` (an index into the game's
action set, minimal unless ``env.full_action_space``). The evaluator applies the protocol's
epsilon-greedy exploration (``eval.epsilon``, 0.001 by default) with its own seeded numpy
generator, so a run is reproducible from ``seed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from scaled_ql.config import EnvConfig, EvalConfig
from scaled_ql.envs.atari import make_vector_env
from scaled_ql.eval.plots import plot_normalized_scores
from scaled_ql.eval.scores import (
    aggregate_mean,
    aggregate_median,
    iqm_of_game_means,
    stratified_bootstrap_ci,
)
from scaled_ql.games import NUM_ACTIONS_FULL, get_game, human_normalized_score

Policy = Callable[[np.ndarray, int], np.ndarray]

CONFIDENCE = 0.95
_SEED_RANGE = 2**31 - 2**16  # ALE seeds are int32; a vector env uses seed .. seed + num_envs - 1


def _check_actions(actions: Any, game: str, game_id: int, num_envs: int, num_actions: int) -> np.ndarray:
    """The policy's output as int64 ``[num_envs]``, or an error naming the game."""
    where = f"policy output for game '{game}' (game_id {game_id})"
    try:
        arr = np.asarray(actions)
    except Exception as err:  # e.g. a CUDA tensor
        raise TypeError(f"{where}: expected a numpy array of {num_envs} actions, found {type(actions).__name__} ({err})") from None
    if arr.shape != (num_envs,):
        raise ValueError(f"{where}: expected shape ({num_envs},), one greedy action per environment, found shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: expected integer action indices, found dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_actions):
        raise ValueError(f"{where}: expected action indices in [0, {num_actions}), found values from {arr.min()} to {arr.max()}")
    return arr.astype(np.int64, copy=False)


def evaluate_game(
    policy: Policy,
    game: str,
    game_id: int,
    episodes: int,
    env_cfg: EnvConfig,
    eval_cfg: EvalConfig,
    seed: int,
    progress: Any = None,
    discount: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Play ``game`` until exactly ``episodes`` episodes have finished.

    ``min(eval_cfg.num_envs, episodes)`` environments run in parallel; the first ``episodes``
    completions are kept and the evaluation stops there (episodes still running are
    dropped). Returns are raw game scores (unclipped). An episode cut by the frame cap or by
    ``eval_cfg.max_episode_steps`` counts as truncated. ``progress``, if given, is a
    tqdm-like object whose ``update(1)`` is called per finished episode.

    Returns ``{"game", "game_id", "episodes", "returns", "lengths", "mean", "std",
    "human_normalized", "truncated_episodes"}`` with ``std`` the population standard
    deviation over episodes and ``human_normalized`` that of the mean return (None when the
    game has no reference scores).

    With ``discount = (gamma, reward_clip)`` also ``discounted_returns`` and ``discounted_mean``:
    per episode sum_t gamma^t clip(r_t) from its first state, the quantity the Q-values of the
    episode's start state estimate (training's gamma and reward clipping; clip 0 = none), so
    "what it thinks it gets" (Q) and "what it gets" can be set side by side in the same units.
    """
    spec = get_game(game)
    if episodes < 1:
        raise ValueError(f"game '{spec.name}': episodes must be at least 1, found {episodes}")
    num_envs = min(eval_cfg.num_envs, episodes)
    env_seed, eps_seed = np.random.SeedSequence(seed).generate_state(2)
    rng = np.random.default_rng(int(eps_seed))
    env = make_vector_env(spec.name, num_envs, env_cfg, max_episode_steps=eval_cfg.max_episode_steps)
    try:
        num_actions = int(env.single_action_space.n)
        obs, _ = env.reset(seed=int(env_seed) % _SEED_RANGE)
        tally = EpisodeTally(spec.name, num_envs, episodes, discount, cap=eval_cfg.max_episode_steps)
        while not tally.done:
            actions = _check_actions(policy(obs, game_id), spec.name, game_id, num_envs, num_actions)
            explore = rng.random(num_envs) < eval_cfg.epsilon
            if explore.any():
                actions = np.where(explore, rng.integers(0, num_actions, size=num_envs), actions)
            obs, reward, terminated, truncated_now, _ = env.step(actions)
            finished = tally.add(reward, terminated, truncated_now)
            if progress is not None and finished:
                progress.update(finished)
    finally:
        env.close()
    return {**tally.summary(), "game_id": int(game_id)}


class EpisodeTally:
    """Returns of the first ``episodes`` episodes to end on ``num_envs`` environments stepped
    together (gymnasium's same-step autoreset): raw returns, lengths, truncations and, with
    ``discount = (gamma, reward_clip)``, discounted returns of clipped rewards (clip 0 = none)."""

    def __init__(self, game: str, num_envs: int, episodes: int, discount: tuple[float, float] | None = None,
                 cap: int = 0) -> None:
        self.game, self.episodes, self.discount, self.cap = game, episodes, discount, cap
        self.gamma, self.clip = discount if discount is not None else (1.0, 0.0)
        self._return = np.zeros(num_envs, dtype=np.float64)
        self._discounted = np.zeros(num_envs, dtype=np.float64)
        self._length = np.zeros(num_envs, dtype=np.int64)
        self.returns: list[float] = []
        self.discounted: list[float] = []
        self.lengths: list[int] = []
        self.truncated = 0
        self.capped = 0  # truncated by the CPU-budget cap `cap` (agent steps), not by the protocol's frame cap

    @property
    def done(self) -> bool:
        return len(self.returns) >= self.episodes

    def add(self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray) -> int:
        """Account one vector step; returns how many of the wanted episodes it finished."""
        clipped = np.clip(reward, -self.clip, self.clip) if self.clip > 0 else reward
        self._discounted += self.gamma ** self._length * clipped
        self._return += reward
        self._length += 1
        finished = 0
        for i in np.flatnonzero(terminated | truncated):
            if not self.done:
                self.returns.append(float(self._return[i]))
                self.discounted.append(float(self._discounted[i]))
                self.lengths.append(int(self._length[i]))
                self.truncated += int(truncated[i] and not terminated[i])
                self.capped += int(bool(truncated[i]) and not terminated[i] and self.cap > 0 and self._length[i] >= self.cap)
                finished += 1
            self._return[i] = self._discounted[i] = 0.0
            self._length[i] = 0
        return finished

    def summary(self) -> dict[str, Any]:
        mean = float(np.mean(self.returns))
        extra = ({"discounted_returns": self.discounted, "discounted_mean": float(np.mean(self.discounted))}
                 if self.discount is not None else {})
        return {
            **extra,
            "game": self.game,
            "episodes": len(self.returns),
            "returns": self.returns,
            "lengths": self.lengths,
            "mean": mean,
            "std": float(np.std(self.returns)),
            "human_normalized": human_normalized_score(self.game, mean),
            "truncated_episodes": self.truncated,
            "capped_episodes": self.capped,
            "capped": self.capped > 0,
        }


def aggregate_scores(
    per_game: dict[str, dict[str, Any]], reps: int = 2000, seed: int = 0, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Mean, median and IQM of human-normalized scores over the games that have reference
    scores, each with a stratified-bootstrap confidence interval.

    Point estimates take one run per game, the game's mean return, normalized: IQM is the
    interquartile mean of the per-game normalized means, median and mean their median and
    mean. The confidence intervals resample episodes: each episode's normalized return is a
    run, episodes are redrawn with replacement within each game (stratified by game), and the
    same statistic of the redrawn per-game means is taken. Games with different episode
    counts are trimmed to the smallest count for the intervals only.
    """
    included = [g for g, r in per_game.items() if r["human_normalized"] is not None]
    excluded = [g for g in per_game if g not in included]
    out: dict[str, Any] = {"num_games": len(included), "games": included, "excluded_games": excluded,
                           "capped_games": [g for g in included if per_game[g].get("capped")]}
    if not included:
        for name in ("iqm", "median", "mean"):
            out[name] = {"value": None, "ci": None}
        return out
    means = np.array([[per_game[g]["human_normalized"] for g in included]])  # [1, games]
    runs = min(len(per_game[g]["returns"]) for g in included)
    episodes = np.array(
        [[human_normalized_score(g, r) for r in per_game[g]["returns"][:runs]] for g in included], dtype=np.float64
    ).T  # [episodes, games]
    for name, metric in (("iqm", iqm_of_game_means), ("median", aggregate_median), ("mean", aggregate_mean)):
        lower, upper = stratified_bootstrap_ci(episodes, metric, reps=reps, seed=seed, confidence=confidence)
        out[name] = {"value": float(metric(means)), "ci": [lower, upper]}
    out["confidence"] = confidence
    return out


def evaluate(
    policy: Policy,
    games: list[str],
    env_cfg: EnvConfig,
    eval_cfg: EvalConfig,
    seed: int,
    out_dir: str | Path | None = None,
    progress: bool = True,
    game_ids: dict[str, int] | None = None,
    discount: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Evaluate ``policy`` on every game of ``games`` for ``eval_cfg.episodes`` episodes each.

    ``game_ids`` maps a game to the id the policy expects (its head); by default a game's id
    is its position in ``games``. Each game gets its own seed derived from ``seed``.

    Returns ``{"games": {name: evaluate_game(...) result}, "aggregate": ..., "protocol": ...}``.
    ``aggregate`` holds the IQM, median and mean of human-normalized scores with
    ``eval_cfg.bootstrap_samples``-replicate 95% stratified-bootstrap CIs (see
    :func:`aggregate_scores`: one run per game, its mean, for the point estimates; episodes
    as runs, stratified by game, for the intervals) and ``excluded_games``, the games left
    out for want of reference scores. ``protocol`` records epsilon, sticky actions,
    frameskip, the frame cap and the ``max_episode_steps`` cap actually used.

    ``discount = (gamma, reward_clip)`` adds each game's discounted returns (see :func:`evaluate_game`).
    With ``out_dir``, writes ``eval.json`` and ``eval.png`` there.
    """
    names = [get_game(g).name for g in games]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate: a game is listed twice in {list(games)}")
    if eval_cfg.episodes < 1:
        raise ValueError(f"config key 'eval.episodes': expected at least 1 to evaluate, found {eval_cfg.episodes}")
    ids = {name: i for i, name in enumerate(names)}
    if game_ids is not None:
        ids = {get_game(g).name: int(i) for g, i in game_ids.items()}
        missing = [n for n in names if n not in ids]
        if missing:
            raise KeyError(f"evaluate: game_ids has no id for {missing}")
    game_seeds = np.random.SeedSequence(seed).generate_state(len(names))
    per_game: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(names) * eval_cfg.episodes, unit="ep", disable=not progress, desc="eval")
    try:
        for name, game_seed in zip(names, game_seeds):
            bar.set_description(f"eval {name}")
            per_game[name] = evaluate_game(
                policy, name, ids[name], eval_cfg.episodes, env_cfg, eval_cfg, int(game_seed), progress=bar, discount=discount
            )
    finally:
        bar.close()
    results = {
        "games": per_game,
        "aggregate": aggregate_scores(per_game, reps=eval_cfg.bootstrap_samples, seed=seed),
        "protocol": {
            "episodes_per_game": eval_cfg.episodes,
            "num_envs": eval_cfg.num_envs,
            "epsilon": eval_cfg.epsilon,
            "sticky_action_prob": env_cfg.sticky_action_prob,
            "frameskip": env_cfg.frameskip,
            "max_episode_frames": env_cfg.max_episode_frames,
            "max_episode_steps": eval_cfg.max_episode_steps,
            "full_action_space": env_cfg.full_action_space,
            "frame_size": env_cfg.frame_size,
            "frame_stack": env_cfg.frame_stack,
            "bootstrap_samples": eval_cfg.bootstrap_samples,
            "confidence": CONFIDENCE,
            "seed": seed,
            "reference_scores": "dqn_zoo atari_data.py (random, human)",
        },
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
        plot_normalized_scores(results, out / "eval.png")
    return results


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _text_table(rows: list[tuple[str, ...]]) -> list[str]:
    """Header, rule and rows as aligned text lines: the first column left, the others right."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))

    return [line(rows[0]), "  ".join("-" * w for w in widths)] + [line(row) for row in rows[1:]]


def format_score_table(results: dict[str, Any]) -> str:
    """A plain-text table: game | episodes | mean ± std | human-normalized, then aggregates.

    Accepts the dict :func:`evaluate` returns, or a mapping of game -> per-game result.
    """
    per_game = results.get("games", results)
    rows = [("game", "episodes", "mean ± std", "human-normalized")]
    for name, r in per_game.items():
        mark = " *" if r.get("capped") else ""
        rows.append((name, str(r["episodes"]), f"{r['mean']:.1f} ± {r['std']:.1f}{mark}", _fmt(r["human_normalized"]) + mark))
    text = _text_table(rows)
    agg = results.get("aggregate")
    if agg is not None:
        text.append("")
        for name in ("iqm", "median", "mean"):
            value, ci = agg[name]["value"], agg[name]["ci"]
            ci_text = f"  [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
            text.append(f"{name.upper():>6} human-normalized: {_fmt(value, 3)}{ci_text}  ({agg['num_games']} games)")
        if agg["excluded_games"]:
            text.append(f"left out of aggregates (no reference scores): {', '.join(agg['excluded_games'])}")
    capped = {name: r for name, r in per_game.items() if r.get("capped")}
    if capped:
        cap = results.get("protocol", {}).get("max_episode_steps", "max_episode_steps")
        text.append(f"* capped: episodes cut at {cap} agent steps ("
                    + ", ".join(f"{n} {r['capped_episodes']} of {r['episodes']}" for n, r in capped.items())
                    + "); not full-game scores (a cut episode can score far above a full one), and the aggregates "
                    + ("include them" if agg is not None and agg.get("capped_games") else "are marked"))
    return "\n".join(text)


def random_policy(games: list[str], env_cfg: EnvConfig, seed: int) -> Policy:
    """A uniformly random policy over each game's action set (game id = position in ``games``)."""
    counts = [NUM_ACTIONS_FULL if env_cfg.full_action_space else get_game(g).num_actions for g in games]
    rng = np.random.default_rng(seed)

    def policy(obs: np.ndarray, game_id: int) -> np.ndarray:
        return rng.integers(0, counts[game_id], size=obs.shape[0])

    return policy


def add_baselines(results: dict[str, Any], games: list[str], env_cfg: EnvConfig, eval_cfg: EvalConfig, seed: int,
                  data_returns: dict[str, float]) -> dict[str, Any]:
    """Add to each game of ``results`` the return of a uniformly random policy played under the
    same protocol (``random_mean``, ``random_std``) and the dataset's mean episode return
    (``data_mean``, from ``data_returns``); returns ``results``."""
    rand = evaluate(random_policy(games, env_cfg, seed), games, env_cfg, eval_cfg, seed=seed, progress=False)
    for game, res in results["games"].items():
        res["random_mean"], res["random_std"] = rand["games"][game]["mean"], rand["games"][game]["std"]
        if game in data_returns:
            res["data_mean"] = data_returns[game]
    return results


def format_learning_table(results: dict[str, Any]) -> str:
    """Per game: the random policy's return, the data's, the learned policy's, and the start-state
    value the network believes (``q_start``) beside the discounted return it gets."""
    rows = [("game", "random", "data", "learned", "beats data", "thinks Q(s0)", "gets (disc.)")]
    for name, r in results["games"].items():
        data = r.get("data_mean")
        beats = "n/a" if data is None else ("yes" if r["mean"] > data else "no")
        rows.append((name, _fmt(r.get("random_mean"), 1), _fmt(data, 1), f"{r['mean']:.1f} ± {r['std']:.1f}", beats,
                     _fmt(r.get("q_start")), _fmt(r.get("discounted_mean"))))
    return "\n".join(_text_table(rows))
