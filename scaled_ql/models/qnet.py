"""The multi-game Q-network: a shared backbone, one head per game, a value representation.

Every game gets its own head with that game's action count (or all games share the full
18-action set with ``env.full_action_space``). All heads live in one linear layer whose
output is read at each sample's game, so a mixed-game batch costs one matmul and no host
sync. Actions a game does not have get Q = -inf.

The network is a Hugging Face Hub model through ``PyTorchModelHubMixin``: ``save_pretrained``
writes ``config.json`` + ``model.safetensors``; ``from_pretrained`` loads a folder or a Hub
repo id without unpickling anything. The model knows nothing of distribution or training.
"""

from __future__ import annotations

from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from scaled_ql.config import EnvConfig, ExperimentConfig, ModelConfig
from scaled_ql.games import get_game
from scaled_ql.models.backbones import build_backbone
from scaled_ql.models.output import QOutput

VALUE_HEADS = {"scalar": 1, "c51": None}  # name -> atoms per action (None: model.num_atoms)


class MultiGameQNetwork(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="scaled_ql",
    tags=["reinforcement-learning", "offline-rl", "atari", "scaled_ql"],
    repo_url="https://github.com/scaled-ql/scaled_ql",
):
    """Q(s, a; game) for many Atari games.

    Args (all JSON-serializable, saved as ``config.json``):
        games: game names; a sample's game id indexes this list.
        model: a ``ModelConfig`` as a dict.
        env: an ``EnvConfig`` as a dict (the preprocessing protocol the network expects).
    """

    fsdp_wrap_modules = ("ResidualBlock",)

    def __init__(self, games: list[str], model: dict[str, Any], env: dict[str, Any]) -> None:
        super().__init__()
        self.games = list(games)
        self.model_cfg = ModelConfig(**model)
        self.env_cfg = EnvConfig(**env)
        cfg, env_cfg = self.model_cfg, self.env_cfg
        if cfg.value not in VALUE_HEADS:
            raise ValueError(f"config key 'model.value': unknown value head '{cfg.value}'; valid: {', '.join(VALUE_HEADS)}")
        self.num_atoms = VALUE_HEADS[cfg.value] or cfg.num_atoms
        self.action_counts = [18 if env_cfg.full_action_space else get_game(g).num_actions for g in self.games]
        self.max_actions = max(self.action_counts)

        self.backbone = build_backbone(
            cfg.backbone, in_channels=env_cfg.frame_stack, frame_size=env_cfg.frame_size,
            feature_dim=cfg.feature_dim, width=cfg.width,
        )
        self.heads = nn.Linear(cfg.feature_dim, len(self.games) * self.max_actions * self.num_atoms)
        mask = torch.zeros(len(self.games), self.max_actions, dtype=torch.bool)
        for g, n in enumerate(self.action_counts):
            mask[g, :n] = True
        self.register_buffer("action_mask", mask, persistent=False)
        self.register_buffer("support", torch.linspace(cfg.v_min, cfg.v_max, self.num_atoms), persistent=False)
        self.channels_last = False

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> "MultiGameQNetwork":
        return cls(games=cfg.games, model=_asdict(cfg.model), env=_asdict(cfg.env))

    @property
    def distributional(self) -> bool:
        return self.num_atoms > 1

    def forward(self, obs: torch.Tensor, game: torch.Tensor) -> QOutput:
        """obs: uint8 [B, K, H, W]; game: int64 [B] -> QOutput."""
        if self.channels_last:  # reorder while still uint8: 4x less memory to move
            obs = obs.contiguous(memory_format=torch.channels_last)
        x = obs.float().mul_(1.0 / 255.0)  # .float() keeps the memory format
        features = self.backbone(x)
        if self.model_cfg.feature_norm:
            features = nn.functional.normalize(features, dim=-1)
        batch = features.shape[0]
        out = self.heads(features).view(batch, len(self.games), self.max_actions, self.num_atoms)
        out = out[torch.arange(batch, device=out.device), game]  # [B, A, M]: each sample's own game head
        valid = self.action_mask[game]  # [B, A]
        if self.distributional:
            logits = out
            q = (logits.softmax(-1) * self.support).sum(-1)
        else:
            logits, q = None, out.squeeze(-1)
        q = q.masked_fill(~valid, float("-inf"))
        return QOutput(q=q, logits=logits, features=features)

    @torch.no_grad()
    def greedy_actions(self, obs: torch.Tensor, game: torch.Tensor) -> torch.Tensor:
        return self(obs, game).q.argmax(-1)


def _asdict(dc: Any) -> dict[str, Any]:
    return {name: getattr(dc, name) for name in dc.__dataclass_fields__}


def build_model(cfg: ExperimentConfig) -> MultiGameQNetwork:
    return MultiGameQNetwork.from_config(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
