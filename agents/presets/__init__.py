"""Tuned hyperparameters per environment, one YAML file per algorithm.

Each file maps a preset name to flat option values (any `drl train` option: run options
such as num_envs and total_steps, algorithm options such as n_steps). The preset named
after the env id is the default for that env, and `ENV_ID@BACKEND` the default when that
backend is chosen (e.g. CartPole-v1@native for --backend native). A name with `*` is a
pattern for a family of envs (`ALE/*-v5`: every Atari game), used when no entry names
the env itself. `--preset NAME` picks
another entry of the algorithm's file and `--preset FILE.yaml` a file of your own holding
one flat mapping.
Every entry says where its numbers come from.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from agents.config import ConfigError
from envs import first_line

PRESET_DIR = Path(__file__).parent


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read preset file {path}: {first_line(exc)}") from None


def available_presets(algo: str) -> dict[str, dict[str, Any]]:
    """All presets shipped for `algo`, by name."""
    path = PRESET_DIR / f"{algo}.yaml"
    return _read_yaml(path) if path.exists() else {}


def load_preset(
    algo: str, env_id: str, preset: str | None, backend: str | None = None
) -> tuple[str | None, dict[str, Any]]:
    """The preset's name and values: `preset` as a name or a YAML path, or by default the
    entry named `ENV_ID@BACKEND` (e.g. CartPole-v1@native) when `backend` is given and has
    one, else the entry named `env_id`, else the first pattern entry matching `env_id`,
    else no preset (the config defaults)."""
    shipped = available_presets(algo)
    if preset is None:
        patterns = [name for name in shipped if "*" in name and "@" not in name and fnmatchcase(env_id, name)]
        for name in (f"{env_id}@{backend}" if backend else None, env_id, *patterns):
            if name in shipped:
                return name, dict(shipped[name])
        return None, {}
    if preset in shipped:
        return preset, dict(shipped[preset])
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"preset file {preset} does not exist")
        values = _read_yaml(path)
        if not isinstance(values, dict):
            raise ConfigError(f"preset file {preset} must hold a mapping of option: value")
        return str(path), values
    names = ", ".join(sorted(shipped)) or "none"
    raise ConfigError(f"unknown preset {preset!r} for {algo}; shipped presets: {names}; or give a .yaml path")
