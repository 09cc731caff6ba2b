"""The one training loop, the update step and checkpoints."""
