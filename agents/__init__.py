"""RL algorithms: one module per algorithm, shared RL math in small modules beside them."""

from agents.a2c import A2C, A2CConfig
from agents.advantages import compute_gae
from agents.batch import Rollout
from agents.config import ConfigError
from agents.ppo import PPO, PPOConfig
from agents.registry import ALGORITHMS, AlgorithmSpec, get_algorithm

__all__ = [
    "A2C",
    "ALGORITHMS",
    "A2CConfig",
    "AlgorithmSpec",
    "ConfigError",
    "PPO",
    "PPOConfig",
    "Rollout",
    "compute_gae",
    "get_algorithm",
]
