"""The algorithms `drl train` knows, by name: each with its config, agent class, the runner
loop that drives it and the action spaces it can act in. Add an algorithm by adding one
entry here, or from your own code with `register_algorithm`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import torch

from agents.a2c import A2C, A2CConfig
from agents.appo import APPO, APPOConfig
from agents.config import ConfigError
from agents.dqn import DQN, DQNConfig
from agents.ppo import PPO, PPOConfig
from agents.sac import SAC, SACConfig
from agents.td3 import TD3, DDPGConfig, TD3Config
from networks import UnsupportedSpaceError


@dataclass(frozen=True)
class AlgorithmSpec:
    """How to build one algorithm and which runner loop drives it."""

    name: str
    summary: str
    config_cls: type
    """The config dataclass: a docstring under each field, `validate()` raising ConfigError."""
    agent_cls: type
    """Called as agent_cls(config, observation_space, action_space, num_envs, device, seed,
    compile); its instances satisfy agents.interface.OnPolicyAgent or OffPolicyAgent (`kind`)."""
    kind: Literal["on_policy", "off_policy"]
    """Which runner loop drives it: rollouts (on_policy) or replay (off_policy)."""
    action_spaces: tuple[type[gym.Space], ...]
    asynchronous: bool = False
    """On Ray workers (`--num-workers`): the learner updates on each unroll as it arrives and
    corrects for the policy lag (APPO), instead of waiting for every worker's (PPO, A2C)."""

    def make_agent(
        self,
        config: Any,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        device: torch.device,
        seed: int,
        compile: bool = False,
    ) -> Any:
        """A new agent for these spaces (weights from torch's global RNG); a ConfigError when
        it cannot read them (`check_action_space` says first whether it can act in them)."""
        try:
            return self.agent_cls(config, observation_space, action_space, num_envs, device, seed, compile)
        except UnsupportedSpaceError as exc:
            raise ConfigError(str(exc)) from None

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
            "appo",
            "Asynchronous PPO with V-trace (IMPACT-style target network)",
            APPOConfig,
            APPO,
            "on_policy",
            ON_POLICY_ACTIONS,
            asynchronous=True,
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


def register_algorithm(spec: AlgorithmSpec, replace: bool = False) -> None:
    """Make `spec` known to `drl train` and the trainer under `spec.name`."""
    if spec.name in ALGORITHMS and not replace:
        raise ValueError(f"an algorithm named {spec.name!r} is registered already")
    ALGORITHMS[spec.name] = spec


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec registered under `name`, or ConfigError listing the known names."""
    try:
        return ALGORITHMS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown algorithm {name!r}; choose one of: {', '.join(sorted(ALGORITHMS))}") from None
