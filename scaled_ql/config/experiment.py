"""One experiment: :class:`ExperimentConfig`, its sections and the checks across them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaled_ql.config.sections import (ConfigError, DataConfig, DistConfig, EnvConfig, EvalConfig, FinetuneConfig, LossConfig,
                                       ModelConfig, OnlineConfig, PrepConfig, TrainConfig, _check)
from scaled_ql.games import get_game


@dataclass(kw_only=True, slots=True)
class ExperimentConfig:
    """A whole experiment. ``config.json`` of a run holds exactly this, resolved."""

    name: str = "run"
    """Run name; the run folder is ``<runs_dir>/<name>``."""
    runs_dir: str = "runs"
    """Parent folder of run folders."""
    seed: int = 0
    """Seed of the model initialisation, the sampler and evaluation."""
    games: list[str] = field(default_factory=lambda: ["Pong", "Breakout"])
    """Training games (names from ``scaled_ql.games``); their order fixes the game ids."""
    held_out_games: list[str] = field(default_factory=list)
    """Games kept out of pretraining, for fine-tuning later (recorded, not trained on)."""
    env: EnvConfig = field(default_factory=EnvConfig)
    prep: PrepConfig = field(default_factory=PrepConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check(len(self.games) >= 1, "games", "at least one game", self.games)
        _check(len(set(self.games)) == len(self.games), "games", "no repeated game", self.games)
        overlap = sorted(set(self.games) & set(self.held_out_games))
        _check(not overlap, "held_out_games", "no game that is also in 'games'", overlap)
        _check(
            not self.model.shared_head or self.env.full_action_space,
            "model.shared_head",
            "false unless env.full_action_space is true (a shared head needs one action set for all games)",
            self.model.shared_head,
        )
        # Game names are validated against the registry here, before any work starts.
        for key, names in (("games", self.games), ("held_out_games", self.held_out_games)):
            for name in names:
                try:
                    get_game(name)
                except KeyError as err:
                    raise ConfigError(f"config key '{key}': {err.args[0]}") from None

    def check_training(self) -> None:
        """Checks of training settings only (not run for ``scaled-ql prep``: a training setting
        must not block data preparation)."""
        _check(
            self.train.batch_size % len(self.games) == 0,
            "train.batch_size",
            f"a multiple of the number of games ({len(self.games)}) so every batch is balanced",
            self.train.batch_size,
        )

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)
