"""Search spaces of `drl tune`: for each algorithm, a function that samples one trial's values.

Each space is rl-baselines3-zoo's, from `rl_zoo3/hyperparams_opt.py` (DLR-RM/rl-baselines3-zoo,
commit 0a9df503: `sample_ppo_params`, `sample_a2c_params`, `sample_dqn_params`,
`sample_sac_params`, `sample_td3_params`, `sample_ddpg_params`), with the same parameter names,
ranges and choices, so that studies and their importance plots read like the zoo's. A sampler
returns `drl train` options (option name -> value); where the zoo samples a quantity we
configure differently, the comment beside it says how it is mapped:

- `one_minus_gamma` and `one_minus_gae_lambda` (log-uniform) become gamma and gae_lambda;
- `net_arch` (tiny / small / medium / big) becomes hidden_sizes, one MLP each for actor and
  critic as in the zoo's dict(pi=..., vf=...);
- `activation_fn` becomes activation;
- `train_freq` F with `gradient_steps` G becomes train_every F and utd_ratio G / F.

Departures, each because the option does not exist here: SAC's `log_std_init` (a gSDE
setting; our SAC has no gSDE) is not sampled, and TD3/DDPG sample only Gaussian action noise
(`exploration_noise`, the zoo's noise_std with noise_type "normal"): there is no
Ornstein-Uhlenbeck noise or noise-free variant.

The functions take an `optuna.Trial` but import nothing from optuna: optuna is an extra
(`pip install 'drl[tune]'`), imported by `drl tune` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

NET_ARCH = {"tiny": [64], "small": [64, 64], "medium": [256, 256], "big": [400, 300]}
"""The zoo's net_arch names as hidden layer widths."""


def _policy_gradient_common(trial: optuna.Trial) -> dict[str, Any]:
    """What the zoo's PPO and A2C samplers share: rollout length, discounting, step size, entropy."""
    n_steps = trial.suggest_categorical("n_steps", [32, 64, 128, 256, 512, 1024, 2048])
    one_minus_gamma = trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True)
    one_minus_gae_lambda = trial.suggest_float("one_minus_gae_lambda", 0.0001, 0.1, log=True)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 0.002, log=True)
    return {
        "n_steps": n_steps,
        "gamma": 1 - one_minus_gamma,
        "gae_lambda": 1 - one_minus_gae_lambda,
        "learning_rate": learning_rate,
    }


def sample_ppo(trial: optuna.Trial) -> dict[str, Any]:
    """The zoo's `sample_ppo_params`."""
    batch_size = trial.suggest_categorical("batch_size", [32, 64, 128, 256, 512])
    options = _policy_gradient_common(trial)
    ent_coef = trial.suggest_float("ent_coef", 0.00000001, 0.1, log=True)
    clip_range = trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3, 0.4])
    n_epochs = trial.suggest_categorical("n_epochs", [1, 5, 10, 20])
    max_grad_norm = trial.suggest_float("max_grad_norm", 0.3, 2)
    net_arch = trial.suggest_categorical("net_arch", ["tiny", "small", "medium"])
    activation = trial.suggest_categorical("activation_fn", ["tanh", "relu"])
    return {
        **options,
        "batch_size": batch_size,  # larger than a rollout: the whole rollout (agents/ppo.py), the zoo's TODO
        "ent_coef": ent_coef,
        "clip_range": clip_range,
        "n_epochs": n_epochs,
        "max_grad_norm": max_grad_norm,
        "hidden_sizes": NET_ARCH[net_arch],
        "activation": activation,
    }


def sample_a2c(trial: optuna.Trial) -> dict[str, Any]:
    """The zoo's `sample_a2c_params`."""
    options = _policy_gradient_common(trial)
    max_grad_norm = trial.suggest_float("max_grad_norm", 0.3, 2)
    ent_coef = trial.suggest_float("ent_coef", 0.00000001, 0.1, log=True)
    net_arch = trial.suggest_categorical("net_arch", ["small", "medium"])
    activation = trial.suggest_categorical("activation_fn", ["tanh", "relu"])
    return {
        **options,
        "max_grad_norm": max_grad_norm,
        "ent_coef": ent_coef,
        "hidden_sizes": NET_ARCH[net_arch],
        "activation": activation,
    }


def sample_dqn(trial: optuna.Trial) -> dict[str, Any]:
    """The zoo's `sample_dqn_params`."""
    gamma = trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999])
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 1, log=True)
    batch_size = trial.suggest_categorical("batch_size", [16, 32, 64, 100, 128, 256, 512])
    buffer_size = trial.suggest_categorical("buffer_size", [int(1e4), int(5e4), int(1e5), int(1e6)])
    exploration_final_eps = trial.suggest_float("exploration_final_eps", 0, 0.2)
    exploration_fraction = trial.suggest_float("exploration_fraction", 0, 0.5)
    target_update_interval = trial.suggest_categorical("target_update_interval", [1, 1000, 5000, 10000, 15000, 20000])
    learning_starts = trial.suggest_categorical("learning_starts", [0, 1000, 5000, 10000, 20000])
    train_freq = trial.suggest_categorical("train_freq", [1, 4, 8, 16, 128, 256, 1000])
    subsample_steps = trial.suggest_categorical("subsample_steps", [1, 2, 4, 8])
    gradient_steps = max(train_freq // subsample_steps, 1)
    net_arch = trial.suggest_categorical("net_arch", ["tiny", "small", "medium"])
    return {
        "gamma": gamma,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "buffer_size": buffer_size,
        "exploration_final_eps": exploration_final_eps,
        "exploration_fraction": exploration_fraction,
        "target_update_interval": target_update_interval,  # env steps, as SB3 counts them (agents/dqn.py)
        "learning_starts": learning_starts,
        "train_every": train_freq,
        "utd_ratio": gradient_steps / train_freq,
        "hidden_sizes": NET_ARCH[net_arch],
    }


def _off_policy_actor_critic_common(trial: optuna.Trial, batch_sizes: list[int]) -> dict[str, Any]:
    """What the zoo's SAC, TD3 and DDPG samplers share."""
    gamma = trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999])
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 1, log=True)
    batch_size = trial.suggest_categorical("batch_size", batch_sizes)
    buffer_size = trial.suggest_categorical("buffer_size", [int(1e4), int(1e5), int(1e6)])
    return {"gamma": gamma, "learning_rate": learning_rate, "batch_size": batch_size, "buffer_size": buffer_size}


def sample_sac(trial: optuna.Trial) -> dict[str, Any]:
    """The zoo's `sample_sac_params` (ent_coef and target_entropy stay "auto", as there)."""
    options = _off_policy_actor_critic_common(trial, [16, 32, 64, 128, 256, 512, 1024, 2048])
    learning_starts = trial.suggest_categorical("learning_starts", [0, 1000, 10000, 20000])
    train_freq = trial.suggest_categorical("train_freq", [1, 4, 8, 16, 32, 64, 128, 256, 512])
    tau = trial.suggest_categorical("tau", [0.001, 0.005, 0.01, 0.02, 0.05, 0.08])
    net_arch = trial.suggest_categorical("net_arch", ["small", "medium", "big"])
    return {
        **options,
        "learning_starts": learning_starts,
        "train_every": train_freq,
        "utd_ratio": 1.0,  # the zoo's gradient_steps = train_freq
        "tau": tau,
        "hidden_sizes": NET_ARCH[net_arch],
    }


def sample_td3(trial: optuna.Trial) -> dict[str, Any]:
    """The zoo's `sample_td3_params` and `sample_ddpg_params` (the same space), Gaussian noise only."""
    options = _off_policy_actor_critic_common(trial, [16, 32, 64, 100, 128, 256, 512, 1024, 2048])
    tau = trial.suggest_categorical("tau", [0.001, 0.005, 0.01, 0.02, 0.05, 0.08])
    train_freq = trial.suggest_categorical("train_freq", [1, 4, 8, 16, 32, 64, 128, 256, 512])
    noise_std = trial.suggest_float("noise_std", 0, 1)
    net_arch = trial.suggest_categorical("net_arch", ["small", "medium", "big"])
    return {
        **options,
        "tau": tau,
        "train_every": train_freq,
        "utd_ratio": 1.0,  # the zoo's gradient_steps = train_freq
        "exploration_noise": noise_std,
        "hidden_sizes": NET_ARCH[net_arch],
    }


SPACES: dict[str, Callable[[optuna.Trial], dict[str, Any]]] = {
    "ppo": sample_ppo,
    "a2c": sample_a2c,
    "dqn": sample_dqn,
    "sac": sample_sac,
    "td3": sample_td3,
    "ddpg": sample_td3,
}
"""The search space of each algorithm `drl tune` knows, by `drl train` name."""
