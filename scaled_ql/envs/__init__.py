"""Atari environments under the standard evaluation protocol (ale_py's vector environment)."""

from scaled_ql.envs.atari import make_vector_env

__all__ = ["make_vector_env"]
