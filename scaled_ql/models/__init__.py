"""Q-networks. Models know nothing of distribution, optimizers or losses."""

from scaled_ql.models.backbones import BACKBONES, build_backbone
from scaled_ql.models.output import QOutput
from scaled_ql.models.qnet import VALUE_HEADS, MultiGameQNetwork, build_model, count_parameters

__all__ = ["BACKBONES", "VALUE_HEADS", "MultiGameQNetwork", "QOutput", "build_backbone", "build_model", "count_parameters"]
