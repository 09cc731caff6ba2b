"""Fine-tuning: the pretraining loop started from a pretrained checkpoint.

Fine-tuning is not a second trainer: it is :func:`scaled_ql.train.trainer.pretrain` with
``finetune.init`` set (backbone and known heads loaded by :func:`init_from_pretrained`,
optionally a frozen backbone or a lower backbone learning rate), other games and other data.
:func:`finetune_config` makes that config from a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from scaled_ql.config import ConfigError, ExperimentConfig, apply_override, config_from_dict, load_config, parse_override
from scaled_ql.models import MultiGameQNetwork
from scaled_ql.models.loading import load_model, load_train_config


def init_from_pretrained(model: MultiGameQNetwork, cfg: ExperimentConfig) -> None:
    """Start ``model`` from ``finetune.init``: its backbone, and its head for every game it knows
    (a variant it has no head for takes its game's); other games keep their fresh heads."""
    pretrained, source = load_model(cfg.finetune.init)
    try:
        report = model.init_from(pretrained)
    except ValueError as err:
        raise ConfigError(f"config key 'finetune.init' ('{source}'): {err}") from None
    from_base = "".join(f", {v} from {b}'s head" for v, b in report["variant_heads"].items())
    tqdm.write(f"fine-tuning from {source}: heads reused for {report['reused_heads']}{from_base}, new for {report['new_heads']}")


def _base_config(init: str) -> dict:
    """The pretrained run's own resolved config (local folder or Hub repo id)."""
    _, source = load_model(init)
    cfg = load_train_config(source)
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
