"""Typed experiment configuration: dataclasses, YAML files and ``a.b=c`` overrides.

One :class:`ExperimentConfig` describes a run completely. It is loaded from a YAML file in
``configs/``, patched by command-line overrides (``train.steps=200``), validated before any
data or model is built, and saved as ``config.json`` in the run folder and in every checkpoint,
so that file alone reproduces the run.

Errors name the key, what was expected and what was found, and suggest the closest valid key.
"""

from scaled_ql.config.experiment import ExperimentConfig
from scaled_ql.config.loading import (RESUMABLE_KEYS, apply_override, config_from_dict, load_config, load_config_json,
                                      parse_override, resume_config)
from scaled_ql.config.sections import (ConfigError, DataConfig, DistConfig, EnvConfig, EvalConfig, FinetuneConfig, LossConfig,
                                       ModelConfig, OnlineConfig, PrepConfig, TrainConfig)

__all__ = ["RESUMABLE_KEYS", "ConfigError", "DataConfig", "DistConfig", "EnvConfig", "EvalConfig", "ExperimentConfig",
           "FinetuneConfig", "LossConfig", "ModelConfig", "OnlineConfig", "PrepConfig", "TrainConfig", "apply_override",
           "config_from_dict", "load_config", "load_config_json", "parse_override", "resume_config"]
