"""The algorithms `drl train` knows, by name: each with its config, agent class and the
action spaces it can act in. Add an algorithm by adding one entry here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gymnasium as gym

from agents.a2c import A2C, A2CConfig
from agents.config import ConfigError
from agents.dqn import DQN, DQNConfig
from agents.ppo import PPO, PPOConfig
from agents.sac import SAC, SACConfig
from agents.td3 import TD3, DDPGConfig, TD3Config


@dataclass(frozen=True)
class AlgorithmSpec:
    """How to build one algorithm and which runner loop drives it."""

    name: str
    summary: str
    config_cls: type
    agent_cls: type
    kind: Literal["on_policy", "off_policy"]
    action_spaces: tuple[type[gym.Space], ...]

    def check_action_space(self, space: gym.Space, env_id: str) -> None:
        """Raise ConfigError when this algorithm cannot act in `space`."""
        supported = isinstance(space, self.action_spaces)
        if isinstance(space, (gym.spaces.Box, gym.spaces.MultiDiscrete)) and len(space.shape) != 1:
            supported = False
        if not supported:
            one_d = (gym.spaces.Box, gym.spaces.MultiDiscrete)
            names = ", ".join(s.__name__ + (" (1-D)" if s in one_d else "") for s in self.action_spaces)
            raise ConfigError(
                f"{self.name} cannot act in {env_id}'s action space {space}; {self.name} supports {names}"
            )


ON_POLICY_ACTIONS = (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.Box)

ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec("ppo", "Proximal Policy Optimization", PPOConfig, PPO, "on_policy", ON_POLICY_ACTIONS),
        AlgorithmSpec(
            "a2c",
            "Advantage Actor-Critic (synchronous)",
            A2CConfig,
            A2C,
            "on_policy",
            ON_POLICY_ACTIONS,
        ),
        AlgorithmSpec(
            "dqn",
            "Deep Q-Network (double, dueling, n-step, prioritised)",
            DQNConfig,
            DQN,
            "off_policy",
            (gym.spaces.Discrete,),
        ),
        AlgorithmSpec("sac", "Soft Actor-Critic", SACConfig, SAC, "off_policy", (gym.spaces.Box,)),
        AlgorithmSpec("td3", "Twin Delayed DDPG", TD3Config, TD3, "off_policy", (gym.spaces.Box,)),
        AlgorithmSpec(
            "ddpg",
            "Deep Deterministic Policy Gradient (TD3 with one critic, no delay or smoothing)",
            DDPGConfig,
            TD3,
            "off_policy",
            (gym.spaces.Box,),
        ),
    )
}


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec registered under `name`, or ConfigError listing the known names."""
    try:
        return ALGORITHMS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown algorithm {name!r}; choose one of: {', '.join(sorted(ALGORITHMS))}") from None
