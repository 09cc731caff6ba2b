"""Q-network conformance over every backbone x value head: shapes, masking, Hub round trip."""

import itertools

import pytest
import torch

from scaled_ql.config import load_config
from scaled_ql.games import get_game
from scaled_ql.losses import VALUE_KINDS
from scaled_ql.models import BACKBONES, MultiGameQNetwork, build_model


@pytest.mark.parametrize("backbone,value", list(itertools.product(sorted(BACKBONES), sorted(VALUE_KINDS))))
def test_forward_shapes_masking_and_round_trip(tmp_path, backbone, value):
    cfg = load_config(None, ["games=[Pong, Breakout]", f"model.backbone={backbone}", f"model.value={value}", "model.feature_dim=32", "train.batch_size=6"])
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
    if model.distributional:
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


def test_one_table_gives_each_value_kind_its_outputs_support_and_td_loss():
    assert set(VALUE_KINDS) == {"scalar", "c51", "hl_gauss"}
    for name, kind in VALUE_KINDS.items():
        cfg = load_config(None, [f"model.value={name}", "model.feature_dim=8"]).model
        assert kind.distributional == (kind.support(cfg.v_min, cfg.v_max, cfg.num_atoms) is not None)
        net = build_model(load_config(None, [f"model.value={name}", "model.feature_dim=8"]))
        assert net.num_atoms == kind.atoms(cfg.num_atoms) and net.distributional == kind.distributional


def test_support_is_c51_atoms_or_hl_gauss_bin_centers():
    def support(value):
        return build_model(load_config(None, [f"model.value={value}", "model.num_atoms=4", "model.v_min=-2", "model.v_max=2",
                                              "model.feature_dim=8"])).support

    torch.testing.assert_close(support("c51"), torch.tensor([-2.0, -2 / 3, 2 / 3, 2.0]))  # atoms include both ends
    torch.testing.assert_close(support("hl_gauss"), torch.tensor([-1.5, -0.5, 0.5, 1.5]))  # centers of 4 bins tiling [-2, 2]
    assert support("scalar") is None


@pytest.mark.parametrize("value", sorted(VALUE_KINDS))
def test_shared_head_gives_every_game_18_actions_and_round_trips(tmp_path, value):
    cfg = load_config(None, ["games=[Pong, Breakout, Seaquest]", "train.batch_size=30", "env.full_action_space=true", "model.shared_head=true",
                             f"model.value={value}", "model.feature_dim=16", "model.num_atoms=5"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    assert model.heads.out_features == 18 * (5 if model.distributional else 1)  # one head, not one per game
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    obs = torch.cat([obs, obs, obs])
    game = torch.tensor([0, 0, 1, 1, 2, 2])
    out = model(obs, game)
    assert out.q.shape == (6, 18) and torch.isfinite(out.q).all()  # all 18 actions valid for every game
    assert torch.equal(out.q[0:2], out.q[2:4]) and torch.equal(out.q[0:2], out.q[4:6])  # same head for all games
    model.save_pretrained(tmp_path)
    loaded = MultiGameQNetwork.from_pretrained(tmp_path, strict=True).eval()
    assert loaded.model_cfg.shared_head and loaded.num_heads == 1
    assert torch.equal(loaded(obs, game).q, out.q)


def test_shared_head_needs_the_full_action_space():
    cfg = load_config(None, ["env.full_action_space=true", "model.shared_head=true", "model.feature_dim=8"])
    model_dict = {name: getattr(cfg.model, name) for name in cfg.model.__dataclass_fields__}
    env_dict = {name: getattr(cfg.env, name) for name in cfg.env.__dataclass_fields__} | {"full_action_space": False}
    with pytest.raises(ValueError, match=r"model.shared_head.*env.full_action_space"):
        MultiGameQNetwork(games=cfg.games, model=model_dict, env=env_dict)


def test_unknown_value_head_lists_valid_ones():
    cfg = load_config(None, ["model.feature_dim=8"])
    model_dict = {name: getattr(cfg.model, name) for name in cfg.model.__dataclass_fields__} | {"value": "quantile"}
    env_dict = {name: getattr(cfg.env, name) for name in cfg.env.__dataclass_fields__}
    with pytest.raises(ValueError, match=r"model.value.*quantile.*valid: c51, hl_gauss, scalar"):
        MultiGameQNetwork(games=cfg.games, model=model_dict, env=env_dict)


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


def test_config_json_records_action_sets_and_refuses_other_ones(tmp_path):
    import json

    cfg = load_config(None, ["games=[Pong, Breakout]", "model.feature_dim=16"])
    build_model(cfg).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["games"] == ["Pong", "Breakout"]
    assert config["action_sets"] == [list(get_game("Pong").action_set), list(get_game("Breakout").action_set)]
    assert config["env"]["sticky_action_prob"] == 0.25 and config["model"]["backbone"] == "nature"
    config["action_sets"][1] = [0, 1, 2, 3]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"action_sets.*'Breakout'"):
        MultiGameQNetwork.from_pretrained(tmp_path)


@pytest.mark.parametrize("value", ["scalar", "c51"])
def test_each_sample_through_its_own_head_equals_picking_from_all_heads(value):
    """The balanced layout's shortcut (``groups``) gives the outputs and gradients of computing
    every head and picking each sample's: for all games in order, s and s' in one pass, a subset
    of games out of order, and one game alone (evaluation)."""
    from scaled_ql.data.batch import game_groups

    cfg = load_config(None, ["games=[Pong, Breakout, Freeway]", "model.backbone=nature", f"model.value={value}",
                             "model.feature_dim=32", "train.batch_size=6"])
    torch.manual_seed(0)
    model = build_model(cfg)
    for game in ([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2], [2, 2, 2, 0, 0, 0], [1, 1, 1, 1]):
        game = torch.tensor(game)
        # s and s' concatenated (12 samples): the runs twice, as the update step passes them
        groups = ((0, 1, 2) * 2, 2) if len(game) == 12 else game_groups(game.numpy())
        assert groups is not None and model._own_heads(torch.zeros(len(game), 32), groups) is not None  # the shortcut is taken
        obs = torch.randint(0, 256, (len(game), 4, 84, 84), dtype=torch.uint8)
        outs = []
        for g in (None, groups):
            model.zero_grad()
            out = model(obs, game, g)
            (out.q.masked_fill(torch.isinf(out.q), 0).square().sum()).backward()
            outs.append((out.q.detach(), model.heads.weight.grad.clone()))
        torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-5)
    assert game_groups(torch.tensor([0, 1, 0, 1]).numpy()) is None and game_groups(torch.tensor([0, 0, 1]).numpy()) is None
