"""Q-network conformance over every backbone x value head: shapes, masking, Hub round trip."""

import itertools

import pytest
import torch

from scaled_ql.config import load_config
from scaled_ql.games import get_game
from scaled_ql.models import BACKBONES, VALUE_HEADS, MultiGameQNetwork, build_model


@pytest.mark.parametrize("backbone,value", list(itertools.product(sorted(BACKBONES), sorted(VALUE_HEADS))))
def test_forward_shapes_masking_and_round_trip(tmp_path, backbone, value):
    cfg = load_config(None, ["games=[Pong, Breakout]", f"model.backbone={backbone}", f"model.value={value}", "model.feature_dim=32"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    game = torch.tensor([0, 1, 1, 0])
    out = model(obs, game)
    a_max = max(get_game("Pong").num_actions, get_game("Breakout").num_actions)
    assert out.q.shape == (4, a_max)
    assert out.features.shape == (4, 32)
    n_breakout = get_game("Breakout").num_actions
    assert torch.isinf(out.q[1, n_breakout:]).all() and torch.isfinite(out.q[1, :n_breakout]).all()
    assert torch.isfinite(out.q[0]).all() or get_game("Pong").num_actions < a_max
    if value == "c51":
        assert out.logits.shape == (4, a_max, cfg.model.num_atoms)
        q = (out.logits.softmax(-1) * model.support).sum(-1)
        assert torch.allclose(q[:, :n_breakout][1], out.q[1, :n_breakout])
    else:
        assert out.logits is None
    assert model.greedy_actions(obs, game)[1] < n_breakout

    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = MultiGameQNetwork.from_pretrained(tmp_path, strict=True).eval()
    assert loaded.games == ["Pong", "Breakout"] and loaded.model_cfg == model.model_cfg
    assert torch.equal(loaded(obs, game).q, out.q)


def test_heads_are_per_game():
    """Changing one game's head leaves the other game's Q-values unchanged."""
    cfg = load_config(None, ["games=[Pong, Breakout]", "model.feature_dim=16"])
    model = build_model(cfg).eval()
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    game = torch.tensor([0, 1])
    before = model(obs, game).q.clone()
    a = model.max_actions
    with torch.no_grad():
        model.heads.weight[a:2 * a] += 1.0  # Breakout's rows
    after = model(obs, game).q
    assert torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])


def test_unknown_backbone_lists_valid_ones():
    cfg = load_config(None, ["model.backbone=resnet9000"])
    with pytest.raises(ValueError, match=r"model.backbone.*resnet9000.*impala.*nature"):
        build_model(cfg)
