"""Loading a config: YAML files, ``a.b=c`` overrides, the saved ``config.json`` of a run, and what a
``--resume`` may change. Errors name the key and suggest the closest valid one."""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from scaled_ql.config.experiment import ExperimentConfig
from scaled_ql.config.sections import ConfigError


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.0)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; allow int where float is expected."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping of {tp.__name__} fields, found {value!r}")
        return _build(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, found {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key '{key}': expected {tp}, found {value!r}")
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"config key '{key}': expected null, found {value!r}")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads '3e-4' (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"config key '{key}': expected a number, found {value!r}") from None
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected true or false, found {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected an integer, found {value!r}")
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, tp):
        raise ConfigError(f"config key '{key}': expected {tp.__name__}, found {value!r} ({type(value).__name__})")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'{_closest(key, names)}; valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as err:  # pragma: no cover - dataclass signature errors
        raise ConfigError(f"config section '{prefix or 'top level'}': {err}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.steps=200`` -> (["train", "steps"], 200). Values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key:
        raise ConfigError(f"override '{text}': the key before '=' is empty")
    return key.split("."), yaml.safe_load(raw) if raw != "" else ""


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``path`` to ``value``; a mapping given for a section is merged into it key by key
    (``train={steps: 5}`` is ``train.steps=5``: it never resets the section's other keys)."""
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{'.'.join(path)}': '{part}' is not a section")
    if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
        for key, sub in value.items():
            apply_override(node[path[-1]], [str(key)], sub)
        return
    node[path[-1]] = value


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key '{key}' appears twice in one section (lines {seen[key].start_mark.line + 1} "
                                  f"and {key_node.start_mark.line + 1}); YAML would silently keep the second")
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    return _build(ExperimentConfig, data)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                training: bool = True) -> ExperimentConfig:
    """Load ``path`` (YAML) and apply ``key.sub=value`` overrides; validate everything (with
    ``training=False``, everything but the training settings' own checks)."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            loaded = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as err:
            raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
        except ConfigError as err:
            raise ConfigError(f"config file '{path}': {err}") from None
        if loaded is None:
            raise ConfigError(f"config file '{path}' is empty: expected a mapping of config keys (an experiment); "
                              "leave out --config to run on the built-in defaults")
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file '{path}': expected a mapping at the top level, found {type(loaded).__name__}")
        data = loaded
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
    try:
        cfg = config_from_dict(data)
        if training:
            cfg.check_training()
        return cfg
    except ConfigError as err:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{err}") from None


RESUMABLE_KEYS = ("train.steps", "train.log_every", "train.checkpoint_every", "train.eval_every", "train.keep_checkpoints",
                  "train.threads", "train.device", "data.path", "dist.world_size", "eval", "online.anneal_offline_to")
"""What ``--resume`` may change in a run's saved config (a longer run, its logging and evaluation,
where its unchanged data now lives: resume checks the data's fingerprint). ``name`` and
``runs_dir`` pick the run."""


def _lookup(data: Any, keys: list[str]) -> Any:
    for part in keys:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def resume_config(requested: ExperimentConfig, overrides: list[str] | tuple[str, ...] = ()) -> tuple[ExperimentConfig, list[str]]:
    """The config to resume ``requested.run_dir`` with: the run's own saved ``config.json``, with
    the ``overrides`` among :data:`RESUMABLE_KEYS` applied; returns it and one line per change.
    An override of another key that differs from the saved value stops, naming the key and both
    values. Without a saved config (nothing to resume yet) ``requested`` is returned as is."""
    saved_path = requested.run_dir / "config.json"
    if not saved_path.is_file():
        return requested, []
    saved = load_config_json(saved_path).to_dict()
    data = json.loads(json.dumps(saved))
    data["dist"]["world_size"] = 0  # the launcher's, resolved again (a DDP run may resume on another count)
    changes = []
    for text in overrides:
        keys, value = parse_override(text)
        dotted = ".".join(keys)
        if dotted in ("name", "runs_dir"):
            continue
        old, new = _lookup(saved, keys), value
        trial = json.loads(json.dumps(data))
        apply_override(trial, keys, value)
        try:  # compare the value as the config reads it (YAML's '1e-3' is the float 0.001)
            new = _lookup(config_from_dict(trial).to_dict(), keys)
        except ConfigError:
            pass  # reported below, with the key, if it is not a key a resume may change
        if new == old:
            continue
        if not any(dotted == k or dotted.startswith(k + ".") for k in RESUMABLE_KEYS):
            raise ConfigError(f"--resume: config key '{dotted}' cannot change when resuming run '{requested.run_dir}' "
                              f"(its {saved_path} has {old!r}, the command line asks for {value!r}); a resume may change "
                              f"only {', '.join(RESUMABLE_KEYS)}. Start a new run (name=...) to change it")
        apply_override(data, keys, value)
        changes.append(f"{dotted}: {old!r} -> {value!r}")
    try:
        cfg = config_from_dict(data)
        cfg.check_training()
        return cfg, changes
    except ConfigError as err:
        raise ConfigError(f"--resume with {saved_path}: {err}") from None


def load_config_json(path: str | Path) -> ExperimentConfig:
    """Load the resolved ``config.json`` saved in a run folder or checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file '{path}' is not valid JSON: {err}") from None
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
