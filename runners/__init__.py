"""Everything that loops: rollout collection, the trainer, evaluation, logging, checkpoints and the CLI."""
