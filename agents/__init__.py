"""RL algorithms: one module per algorithm, shared RL math in small modules beside them.

`agents.interface` says what a runner may ask of an agent; `agents.registry` names the
algorithms `drl` knows and builds them.
"""

from agents.a2c import A2C, A2CConfig
from agents.advantages import compute_gae
from agents.batch import Metrics, Progress, Rollout, Transitions
from agents.config import ConfigError
from agents.interface import Agent, OffPolicyAgent, OnPolicyAgent
from agents.ppo import PPO, PPOConfig
from agents.registry import ALGORITHMS, AlgorithmSpec, get_algorithm, register_algorithm

__all__ = [
    "A2C",
    "ALGORITHMS",
    "A2CConfig",
    "Agent",
    "AlgorithmSpec",
    "ConfigError",
    "Metrics",
    "OffPolicyAgent",
    "OnPolicyAgent",
    "PPO",
    "PPOConfig",
    "Progress",
    "Rollout",
    "Transitions",
    "compute_gae",
    "get_algorithm",
    "register_algorithm",
]
