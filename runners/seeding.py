"""Derive every seed of a run from its one root seed."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Seeds(NamedTuple):
    """Independent seeds for each consumer of randomness in a run."""

    env: int  # training envs: env i is reset with env + i
    eval: int  # evaluation envs (the same episodes at every evaluation) and stochastic eval actions
    torch: int  # torch's global RNG: network initialisation
    agent: int  # the agent's own generator: action sampling and minibatch order


def derive_seeds(root: int) -> Seeds:
    """Seeds for every consumer, drawn from a NumPy SeedSequence of `root` (statistically independent)."""
    return Seeds(*(int(s) for s in np.random.SeedSequence(root).generate_state(len(Seeds._fields))))
