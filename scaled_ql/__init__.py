"""scaled_ql: offline Q-learning at scale on multi-game Atari."""

__version__ = "0.1.0"
