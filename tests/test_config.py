"""Typed options: parsing, presets, docs, round trips, and value checks."""

import dataclasses

import pytest

from agents import ALGORITHMS, A2CConfig, ConfigError, PPOConfig
from agents.presets import available_presets, load_preset
from runners.cliargs import field_docs, from_dict, leaves, parse_value, set_values, to_dict
from runners.config import TrainConfig


@pytest.mark.parametrize(
    "tp, raw, expected",
    [
        (int, "1e5", 100_000),
        (int, "42", 42),
        (float, "3e-4", 3e-4),
        (bool, "false", False),
        (float | None, "none", None),
        (float | None, "0.5", 0.5),
        (tuple[int, ...], "64 64", (64, 64)),
        (tuple[int, ...], [32, 16], (32, 16)),
    ],
)
def test_parse_value(tp, raw, expected):
    assert parse_value(tp, raw) == expected


@pytest.mark.parametrize("tp, raw", [(int, "2.5"), (int, "abc"), (float, "fast"), (bool, "maybe"), (int, True)])
def test_parse_value_rejects(tp, raw):
    with pytest.raises(ValueError):
        parse_value(tp, raw)


def test_option_names_are_unique_across_run_and_algorithm_configs():
    run = set(leaves(TrainConfig()))
    for spec in ALGORITHMS.values():
        assert not run & set(leaves(spec.config_cls())), spec.name


@pytest.mark.parametrize("cls", [TrainConfig, PPOConfig, A2CConfig])
def test_every_option_has_help_text(cls):
    docs = {}
    for leaf in leaves(cls()).values():
        docs[leaf.name] = leaf.doc
    assert all(docs.values()), [name for name, doc in docs.items() if not doc]


def test_field_docs_reads_the_docstring_under_each_field():
    assert field_docs(PPOConfig)["clip_range"].startswith("Clip the probability ratio")
    assert field_docs(A2CConfig)["gamma"] == "Discount factor."  # inherited from the shared config


def test_set_values_routes_keys_and_rejects_unknown_ones():
    train, algo = TrainConfig(), PPOConfig()
    set_values([train, algo], {"num_envs": 4, "n_steps": "64", "hidden_sizes": [32, 32]}, "test")
    assert train.num_envs == 4 and algo.n_steps == 64 and algo.network.hidden_sizes == (32, 32)
    with pytest.raises(ConfigError, match="unknown option 'n_stpes' in test"):
        set_values([train, algo], {"n_stpes": 1}, "test")
    with pytest.raises(ConfigError, match="n_steps in test must be an integer"):
        set_values([train, algo], {"n_steps": "many"}, "test")


def test_dict_round_trip():
    algo = PPOConfig(n_steps=16, clip_range_vf=0.3)
    algo.network.hidden_sizes = (8, 4)
    again = from_dict(PPOConfig, to_dict(algo))
    assert again == algo and dataclasses.is_dataclass(again.network)


@pytest.mark.parametrize(
    "cfg, message",
    [
        (PPOConfig(n_steps=-5), "--n-steps must be positive and finite, got -5"),
        (PPOConfig(gamma=1.5), "--gamma must be between 0 and 1"),
        (PPOConfig(target_kl=-1.0), "--target-kl must be positive or none"),
        (TrainConfig(total_steps=0), "--total-steps must be positive and finite"),
        (TrainConfig(logger="jsonl,csv"), "--logger must be a comma-separated list"),
        (TrainConfig(device="tpu"), "--device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_validation_names_the_option(cfg, message):
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_shipped_presets_parse_and_validate():
    for name, spec in ALGORITHMS.items():
        for preset, values in available_presets(name).items():
            train, algo = TrainConfig(), spec.config_cls()
            set_values([train, algo], values, f"{name} preset {preset}")
            train.validate()
            algo.validate()


def test_cartpole_preset_is_the_zoo_entry():
    name, values = load_preset("ppo", "CartPole-v1", None)
    train, algo = TrainConfig(), PPOConfig()
    set_values([train, algo], values, name)
    assert (train.num_envs, train.total_steps) == (8, 100_000)
    assert (algo.n_steps, algo.batch_size, algo.n_epochs) == (32, 256, 20)
    assert (algo.gamma, algo.gae_lambda, algo.learning_rate, algo.clip_range) == (0.98, 0.8, 1e-3, 0.2)
    assert algo.lr_schedule == algo.clip_schedule == "linear"


def test_unknown_preset_lists_the_shipped_ones(tmp_path):
    shipped = r"unknown preset 'nope' for ppo; shipped presets: .*ALE/\*-v5, CartPole-v1, "
    with pytest.raises(ConfigError, match=shipped):
        load_preset("ppo", "CartPole-v1", "nope")
    assert load_preset("ppo", "Acrobot-v1", None) == (None, {})
    custom = tmp_path / "mine.yaml"
    custom.write_text("n_steps: 16\n")
    assert load_preset("ppo", "CartPole-v1", str(custom)) == (str(custom), {"n_steps": 16})


def test_a_run_saved_before_the_sac_rewrite_still_loads_its_config():
    from agents.sac import SACConfig
    from runners.trainer import configs_from, run_config

    saved = run_config(TrainConfig(algo="sac", env_id="Pendulum-v1"), SACConfig(learning_rate=1e-3))
    saved["train"]["keep_freed_memory"] = True  # options of the hand-written SAC update and the old trainer
    saved["agent"].update(fused_update=True, update_dtype="auto", compile_update=True)
    train, agent = configs_from(saved)
    assert train.env_id == "Pendulum-v1" and agent.learning_rate == 1e-3
    saved["agent"]["no_such_option"] = 1  # anything else unknown is still refused
    with pytest.raises(ConfigError, match="unknown option 'no_such_option'"):
        configs_from(saved)
