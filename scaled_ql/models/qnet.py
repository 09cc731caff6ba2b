"""The multi-game Q-network: a shared backbone, per-game (or one shared) head, a value representation.

Every game gets its own head with that game's action count (or all games share the full
18-action set with ``env.full_action_space``). All heads live in one linear layer whose
output is read at each sample's game, so a mixed-game batch costs one matmul and no host
sync. Actions a game does not have get Q = -inf. With ``model.shared_head`` (which requires
``env.full_action_space``) there is a single 18-action head for every game instead, as in
Multi-Game Decision Transformers: the game id then does not enter the network at all.

The value representation is picked by name from ``scaled_ql.losses.values.VALUE_KINDS``
(``scalar``, ``c51``, ``hl_gauss``): the one table that says how many outputs each action gets,
the values they stand for, and the TD loss that trains them.

The network is a Hugging Face Hub model through ``PyTorchModelHubMixin``: ``save_pretrained``
writes ``config.json`` + ``model.safetensors``; ``from_pretrained`` loads a folder or a Hub
repo id without unpickling anything. The model knows nothing of distribution or training.
"""

from __future__ import annotations

from typing import Any

import torch
from huggingface_hub import PyTorchModelHubMixin
from safetensors.torch import save_file
from torch import nn

from scaled_ql.config import EnvConfig, ExperimentConfig, ModelConfig
from scaled_ql.games import get_game
from scaled_ql.losses.values import VALUE_KINDS
from scaled_ql.models.backbones import build_backbone
from scaled_ql.models.output import QOutput
from scaled_ql.models.weights import check_config_against_weights, read_weights, weights_file

FULL_ACTION_SET = 18
"""Size of the full Atari action set (``env.full_action_space``)."""


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
        action_sets: per game, the ALE actions its head's outputs stand for (head output i is
            ALE action ``action_sets[g][i]``); recorded so a checkpoint says what its outputs
            mean, and checked against the installed ale_py when loaded. None: read from ale_py.
    """

    fsdp_wrap_modules = ("ResidualBlock", "BasicBlock", "Bottleneck", "ViTLayer")

    def _save_pretrained(self, save_directory) -> None:
        """Write ``model.safetensors`` from a detached copy of the state dict: under DeepSpeed ZeRO
        the parameters are views into one flat buffer, which safetensors refuses to save as is."""
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(save_directory / "model.safetensors"), metadata={"format": "pt"})

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision, cache_dir, force_download: bool, local_files_only: bool, token,
                         map_location: str = "cpu", strict: bool = False, **model_kwargs):
        """The mixin's loader, made safe (see ``scaled_ql.models.weights``): safetensors only,
        config shapes checked against the file before building, non-finite weights refused."""
        file = weights_file(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                            local_files_only=local_files_only, token=token)
        check_config_against_weights(cls, model_kwargs, file)
        state = read_weights(file)
        model = cls(**model_kwargs)
        model.load_state_dict(state, strict=strict)
        return model.to(map_location).eval()

    def __init__(
        self, games: list[str], model: dict[str, Any], env: dict[str, Any], action_sets: list[list[int]] | None = None
    ) -> None:
        super().__init__()
        self.games = list(games)
        self.model_cfg = ModelConfig(**model)
        self.env_cfg = EnvConfig(**env)
        cfg, env_cfg = self.model_cfg, self.env_cfg
        if cfg.value not in VALUE_KINDS:
            raise ValueError(f"config key 'model.value': unknown value head '{cfg.value}'; valid: {', '.join(sorted(VALUE_KINDS))}")
        if cfg.shared_head and not env_cfg.full_action_space:
            raise ValueError(
                "config key 'model.shared_head': expected false unless env.full_action_space is true "
                "(a shared head needs one action set for all games), found True"
            )
        value_kind = VALUE_KINDS[cfg.value]
        self.num_atoms = value_kind.atoms(cfg.num_atoms)
        expected = action_sets_for(self.games, env_cfg)
        if action_sets is not None and [list(map(int, a)) for a in action_sets] != expected:
            bad = next(g for g, a, e in zip(self.games, action_sets, expected) if list(map(int, a)) != e)
            raise ValueError(f"config key 'action_sets': the checkpoint's actions for game '{bad}' differ from the "
                             f"installed ale_py's {expected[self.games.index(bad)]}; its head outputs would mean other actions")
        self.action_sets = expected
        self.action_counts = [len(a) for a in expected]
        self.max_actions = max(self.action_counts)
        self.num_heads = 1 if cfg.shared_head else len(self.games)

        self.backbone = build_backbone(cfg, in_channels=env_cfg.frame_stack, frame_size=env_cfg.frame_size)
        # Head h, action a, atom m is output row (h * max_actions + a) * num_atoms + m.
        self.heads = nn.Linear(cfg.feature_dim, self.num_heads * self.max_actions * self.num_atoms)
        mask = torch.zeros(len(self.games), self.max_actions, dtype=torch.bool)
        for g, n in enumerate(self.action_counts):
            mask[g, :n] = True
        # Optional heads of other algorithms (loss.algorithm iql, brac): one row block per head.
        self.policy_head = nn.Linear(cfg.feature_dim, self.num_heads * self.max_actions) if cfg.policy_head else None
        self.value_head = nn.Linear(cfg.feature_dim, self.num_heads) if cfg.state_value_head else None
        self.register_buffer("action_mask", mask, persistent=False)
        # [num_atoms] values of the atoms or bins (see VALUE_KINDS); None for a scalar head.
        self.register_buffer("support", value_kind.support(cfg.v_min, cfg.v_max, cfg.num_atoms), persistent=False)
        self.channels_last = False

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> "MultiGameQNetwork":
        # The action sets are passed explicitly so config.json (the saved init arguments) records them.
        return cls(games=cfg.games, model=_asdict(cfg.model), env=_asdict(cfg.env),
                   action_sets=action_sets_for(cfg.games, cfg.env))

    @torch.no_grad()
    def init_from(self, source: "MultiGameQNetwork") -> dict[str, list[str]]:
        """Start from a pretrained network: copy its backbone, and for every game of this network
        that ``source`` has a head for, that head; a game variant (``Freeway-m1d0``) that it has no
        head for gets its game's head (same action set). Returns which games reused a head (and,
        under ``variant_heads``, which variant took its game's) and which got a fresh one. The
        architecture (model and preprocessing settings) must be the same."""
        # Which extra heads there are (and how the policy acts) follows the algorithm, not the architecture.
        extra = ("policy_head", "state_value_head", "act_with")
        mine = {k: v for k, v in _asdict(self.model_cfg).items() if k not in extra}
        theirs = {k: v for k, v in _asdict(source.model_cfg).items() if k not in extra}
        diffs = [f"model.{k}: pretrained {theirs[k]!r}, this config {mine[k]!r}" for k in mine if mine[k] != theirs[k]]
        diffs += [f"env.{k}: pretrained {getattr(source.env_cfg, k)!r}, this config {getattr(self.env_cfg, k)!r}"
                  for k in self.env_cfg.__dataclass_fields__ if getattr(self.env_cfg, k) != getattr(source.env_cfg, k)]
        if diffs:
            raise ValueError("the pretrained network has another architecture or preprocessing:\n  " + "\n  ".join(diffs))
        self.backbone.load_state_dict(source.backbone.state_dict())
        shape = (-1, self.max_actions, self.num_atoms)
        src_shape = (-1, source.max_actions, source.num_atoms)
        w, b = self.heads.weight.view(*shape, self.heads.in_features), self.heads.bias.view(*shape)
        sw, sb = source.heads.weight.view(*src_shape, source.heads.in_features), source.heads.bias.view(*src_shape)
        pairs = [((w, b), (sw, sb))]
        for name, rows, src_rows in (("policy_head", self.max_actions, source.max_actions), ("value_head", 1, 1)):
            mine_head, their_head = getattr(self, name), getattr(source, name)
            if mine_head is not None and their_head is not None:
                pairs.append(((mine_head.weight.view(-1, rows, mine_head.in_features), mine_head.bias.view(-1, rows)),
                              (their_head.weight.view(-1, src_rows, their_head.in_features), their_head.bias.view(-1, src_rows))))
        reused, fresh, from_base = [], [], {}
        for g, game in enumerate(self.games):
            # A game variant (Freeway-m1d0) the source has no head for starts from its game's head.
            origin = source.head_for(game)
            if origin is None:
                fresh.append(game)
                continue
            if origin != game:
                from_base[game] = origin
            h, sh = (0, 0) if self.model_cfg.shared_head else (g, source.games.index(origin))
            for (mw, mb), (tw, tb) in pairs:
                n = min(mw.shape[1], self.max_actions if self.model_cfg.shared_head else self.action_counts[g])
                mw[h, :n].copy_(tw[sh, :n])
                mb[h, :n].copy_(tb[sh, :n])
            reused.append(game)
        return {"reused_heads": reused, "new_heads": fresh, "variant_heads": from_base}

    def head_for(self, game: str) -> str | None:
        """The game whose head plays ``game``: its own, else (a variant, ``Freeway-m1d0``) its
        game's, which has the same ROM and actions; None when this network has neither."""
        origin = game if game in self.games else _variant_base(game)
        return origin if origin in self.games else None

    @property
    def distributional(self) -> bool:
        return self.support is not None

    def forward(self, obs: torch.Tensor, game: torch.Tensor, groups: tuple[tuple[int, ...], int] | None = None) -> QOutput:
        """obs: uint8 [B, K, H, W]; game: int64 [B] -> QOutput.

        ``groups = (ids, n)`` says that ``game`` is ``n`` samples of each game of ``ids`` in turn
        (the sampler's balanced layout; ``scaled_ql.data.batch.game_groups``): then each sample
        goes through its own game's head only, and the cost of the heads does not grow with the
        number of games. Without it, every head is computed for every sample and each picks its own."""
        if self.channels_last:  # reorder while still uint8: 4x less memory to move
            obs = obs.contiguous(memory_format=torch.channels_last)
        # The input takes the weights' dtype: fp32 (also under autocast) or bf16 when DeepSpeed keeps
        # bf16 weights; 0..255 are exact in both. The conversion keeps the memory format.
        x = obs.to(self.heads.weight.dtype).mul_(1.0 / 255.0)
        features = self.backbone(x)
        if self.model_cfg.feature_norm:
            features = nn.functional.normalize(features, dim=-1)
        out = self._own_heads(features, groups)
        if out is None:
            out = self._pick_head(self.heads(features).view(features.shape[0], self.num_heads, self.max_actions, self.num_atoms), game)
        valid = self.action_mask[game]  # [B, A]
        if self.distributional:
            logits = out
            q = (logits.softmax(-1) * self.support).sum(-1)
        else:
            logits, q = None, out.squeeze(-1)
        q = q.masked_fill(~valid, float("-inf"))
        policy_logits = v = None
        if self.policy_head is not None:
            policy_logits = self._pick_head(self.policy_head(features).view(features.shape[0], self.num_heads, self.max_actions), game)
            policy_logits = policy_logits.masked_fill(~valid, float("-inf"))
        if self.value_head is not None:
            v = self._pick_head(self.value_head(features), game)
        return QOutput(q=q, logits=logits, features=features, policy_logits=policy_logits, v=v)

    def _own_heads(self, features: torch.Tensor, groups: tuple[tuple[int, ...], int] | None) -> torch.Tensor | None:
        """[B, max_actions, num_atoms]: each sample through its own head, one batched matrix product
        over the groups of ``groups`` (see :meth:`forward`); None when there is no layout to use."""
        if groups is None or self.num_heads == 1:
            return None
        ids, n = groups
        k = len(set(ids))
        repeats = len(ids) // k  # s and s' in one pass: the same games twice
        base = tuple(ids[:k])
        if len(ids) != k * repeats or tuple(ids) != base * repeats or len(ids) * n != features.shape[0]:
            return None
        width, outputs = features.shape[-1], self.max_actions * self.num_atoms
        x = features.view(repeats, k, n, width).transpose(0, 1).reshape(k, repeats * n, width)
        weight = self.heads.weight.view(self.num_heads, outputs, width)
        bias = self.heads.bias.view(self.num_heads, outputs, 1)
        if base != tuple(range(self.num_heads)):
            index = torch.tensor(base, device=weight.device)
            weight, bias = weight.index_select(0, index), bias.index_select(0, index)
        # W x^T rather than x W^T: the weights' gradient then comes out in their own layout, with no
        # transposed copy of every head's weights in the backward (measured 89 -> 49 ms for 41 C51 heads).
        out = torch.baddbmm(bias, weight, x.transpose(1, 2)).transpose(1, 2)  # [k, repeats * n, outputs]
        return out.reshape(k, repeats, n, outputs).transpose(0, 1).reshape(features.shape[0], self.max_actions, self.num_atoms)

    def _pick_head(self, out: torch.Tensor, game: torch.Tensor) -> torch.Tensor:
        """[B, num_heads, ...] -> [B, ...]: each sample's own game head (or the one shared head)."""
        if self.num_heads == 1:
            return out[:, 0]
        return out[torch.arange(out.shape[0], device=out.device), game]

    @staticmethod
    def action_scores(out: QOutput, act_with: str) -> torch.Tensor:
        """[B, A] scores whose argmax is the greedy action: Q, or the policy head's logits."""
        return out.policy_logits if act_with == "policy" else out.q

    @torch.no_grad()
    def greedy_actions(self, obs: torch.Tensor, game: torch.Tensor, groups: tuple[tuple[int, ...], int] | None = None) -> torch.Tensor:
        """argmax_a of Q(s, a), or of the policy head's logits with ``model.act_with=policy``."""
        return self.action_scores(self(obs, game, groups), self.model_cfg.act_with).argmax(-1)


def action_sets_for(games: list[str], env_cfg: EnvConfig) -> list[list[int]]:
    """Per game, the ALE actions of its head outputs: the minimal set, or all 18."""
    if env_cfg.full_action_space:
        return [list(range(FULL_ACTION_SET)) for _ in games]
    return [[int(a) for a in get_game(g).action_set] for g in games]


def _asdict(dc: Any) -> dict[str, Any]:
    return {name: getattr(dc, name) for name in dc.__dataclass_fields__}


def build_model(cfg: ExperimentConfig) -> MultiGameQNetwork:
    return MultiGameQNetwork.from_config(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _variant_base(game: str) -> str:
    """The game of a variant (``Freeway`` for ``Freeway-m1d0``); ``game`` itself otherwise."""
    try:
        return get_game(game).base or game
    except KeyError:
        return game
