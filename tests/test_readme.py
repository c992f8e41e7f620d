"""The README's promises: its first commands, and the CI script running the test command."""

from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()[:12]
    return [line.strip() for line in lines if line.startswith("    ")]


def test_readme_starts_with_install_and_train_then_install_and_test():
    train, test = readme_commands()[:2]
    assert "pip install" in train and "drl train ppo CartPole-v1" in train
    assert "pip install" in test and "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim():
    test = readme_commands()[1]
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
