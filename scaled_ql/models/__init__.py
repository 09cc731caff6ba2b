"""Q-networks, and loading one for use (from a folder or the Hub, into a greedy policy).
Models know nothing of distribution, optimizers, data or the trainer."""

from scaled_ql.models.backbones import BACKBONES, build_backbone
from scaled_ql.models.loading import CheckpointError, load_model
from scaled_ql.models.output import QOutput
from scaled_ql.models.policy import checkpoint_policy, greedy_policy
from scaled_ql.models.qnet import MultiGameQNetwork, build_model, count_parameters

__all__ = ["BACKBONES", "CheckpointError", "MultiGameQNetwork", "QOutput", "build_backbone", "build_model", "checkpoint_policy",
           "count_parameters", "greedy_policy", "load_model"]
