"""Fine-tuning configs: the pretraining loop started from a pretrained checkpoint.

Fine-tuning is not a second trainer: it is :func:`scaled_ql.train.trainer.pretrain` with
``finetune.init`` set (backbone and known heads loaded, optionally a frozen backbone or a lower
backbone learning rate), other games and other data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from scaled_ql.config import ConfigError, ExperimentConfig, config_from_dict, load_config
from scaled_ql.config import apply_override, parse_override


def _base_config(init: str) -> dict:
    """The pretrained run's own resolved config (local folder or Hub repo id)."""
    from scaled_ql.eval.run import _train_config, load_model

    _, source = load_model(init)
    cfg = _train_config(source)
    if cfg is None:
        raise ConfigError(f"finetune --init '{init}': no train_config.json beside the weights; pass --config")
    return cfg.to_dict()


def finetune_config(
    init: str,
    games: Sequence[str],
    data: str | Path,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    freeze_backbone: bool = False,
    backbone_lr_scale: float | None = None,
) -> ExperimentConfig:
    """The experiment config of a fine-tuning run (validated)."""
    data_dict = load_config(config).to_dict() if config is not None else _base_config(init)
    data_dict.update(games=list(games), held_out_games=[], name=f"finetune-{'-'.join(games)}")
    data_dict["data"].update(path=str(data), ignore_extra_games=True)
    data_dict["finetune"] = {"init": str(init), "freeze_backbone": freeze_backbone,
                             "backbone_lr_scale": 1.0 if backbone_lr_scale is None else backbone_lr_scale}
    # What the pretraining launcher resolved says nothing about this run's launcher.
    data_dict["dist"].update(world_size=0, mixed_precision="auto")
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data_dict, keys, value)
    return config_from_dict(data_dict)
