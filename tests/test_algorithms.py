"""loss.algorithm: behaviour cloning, IQL and BRAC beside Q-learning, over the same network and data.

The component losses have hand-checked tests in test_baseline_losses.py; here: the config gives
each algorithm its heads, the network's extra heads (shapes, masking, acting, Hub round trip,
fine-tuning copies), each algorithm's total on hand-made numbers, and a real training run of each.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from scaled_ql.config import ConfigError, LossConfig, load_config
from scaled_ql.data.batch import TorchBatch
from scaled_ql.losses import ALGORITHMS, NetworkOutputs, check_algorithm, total_loss
from scaled_ql.losses.algorithms import algorithm_class
from scaled_ql.losses.bc import bc_loss
from scaled_ql.losses.brac import brac_penalty
from scaled_ql.models import MultiGameQNetwork, build_model

INF = float("inf")
t = torch.tensor


def _algorithm_config(algorithm: str, *overrides: str):
    """A config of ``algorithm`` with the heads it declares (its ``model_overrides``)."""
    return load_config(None, [f"loss.algorithm={algorithm}", *ALGORITHMS[algorithm].model_overrides(), *overrides])


def test_one_registry_declares_each_algorithms_heads_and_the_config_is_never_rewritten():
    assert set(ALGORITHMS) == {"q_learning", "bc", "iql", "brac"}
    iql = _algorithm_config("iql", "games=[Pong]")
    assert check_algorithm(iql) is ALGORITHMS["iql"]
    assert (iql.model.policy_head, iql.model.state_value_head, iql.model.act_with) == (True, True, "policy")
    brac = _algorithm_config("brac", "games=[Pong]")
    assert check_algorithm(brac) is ALGORITHMS["brac"]
    assert (brac.model.policy_head, brac.model.state_value_head, brac.model.act_with) == (True, False, "q")
    plain = load_config(None, ["games=[Pong]"]).model
    assert (plain.policy_head, plain.state_value_head, plain.act_with) == (False, False, "q")
    # A config that lacks the heads its algorithm needs is an error naming the key, not silently changed.
    bare = load_config(None, ["games=[Pong]", "loss.algorithm=iql"])
    assert (bare.model.policy_head, bare.model.state_value_head, bare.model.act_with) == (False, False, "q")
    with pytest.raises(ConfigError, match=r"model.policy_head.*expected True for loss.algorithm=iql.*found False.*"
                                          r"model.policy_head=true model.state_value_head=true model.act_with=policy"):
        check_algorithm(bare)
    with pytest.raises(ConfigError, match=r"model.policy_head.*expected True for loss.algorithm=brac.*found False"):
        check_algorithm(load_config(None, ["games=[Pong]", "loss.algorithm=brac"]))
    with pytest.raises(ConfigError, match=r"loss.calibrated.*expected false for loss.algorithm=bc.*found True"):
        check_algorithm(load_config(None, ["games=[Pong]", "loss.algorithm=bc", "loss.calibrated=true"]))
    assert [ALGORITHMS[a].learns_values for a in ALGORITHMS] == [True, False, True, True]


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"loss.algorithm.*one of q_learning, bc, iql, brac.*'cql'"):
        check_algorithm(load_config(None, ["games=[Pong]", "loss.algorithm=cql"]))
    with pytest.raises(ConfigError, match=r"model.value.*'scalar' for loss.algorithm=iql.*'c51'"):
        check_algorithm(load_config(None, ["games=[Pong]", "loss.algorithm=iql", "model.value=c51"]))
    with pytest.raises(ConfigError, match=r"model.act_with.*policy head"):
        load_config(None, ["games=[Pong]", "model.act_with=policy"])
    with pytest.raises(ConfigError, match="loss.iql_expectile"):
        load_config(None, ["games=[Pong]", "loss.iql_expectile=1.0"])


def _net(algorithm: str, games=("Pong", "Breakout")) -> MultiGameQNetwork:
    cfg = _algorithm_config(algorithm, f"games=[{', '.join(games)}]", "model.feature_dim=16")
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_extra_heads_are_per_game_masked_and_pick_the_action_with_act_with():
    net = _net("iql")
    obs = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    game = t([0, 1, 1])
    out = net(obs, game)
    n_pong, n_breakout = net.action_counts
    assert out.policy_logits.shape == out.q.shape == (3, max(n_pong, n_breakout)) and out.v.shape == (3,)
    assert torch.isinf(out.policy_logits[1, n_breakout:]).all() and torch.isfinite(out.policy_logits[0, :n_pong]).all()
    # Each sample reads its own game's rows of the heads.
    feats = out.features
    assert torch.allclose(out.v, (feats @ net.value_head.weight.T + net.value_head.bias)[torch.arange(3), game])
    # Acting follows model.act_with: the policy head for IQL, Q otherwise.
    with torch.no_grad():
        net.policy_head.bias.zero_()
        net.policy_head.weight.zero_()
        net.policy_head.bias[1] = 5.0  # Pong's action 1
        net.policy_head.bias[n_pong + 2] = 5.0  # Breakout's action 2 (the Breakout head starts at row max_actions)
    assert net.max_actions == n_pong
    assert net.greedy_actions(obs, game).tolist() == [1, 2, 2]
    q_net = _net("brac")
    assert q_net.model_cfg.act_with == "q"
    assert torch.equal(q_net.greedy_actions(obs, game), q_net(obs, game).q.argmax(-1))


def test_extra_heads_round_trip_and_fine_tuning_copies_them(tmp_path):
    net = _net("iql")
    obs = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    game = t([0, 1])
    net.save_pretrained(tmp_path)
    loaded = MultiGameQNetwork.from_pretrained(tmp_path, strict=True).eval()
    a, b = net(obs, game), loaded(obs, game)
    assert torch.equal(a.policy_logits, b.policy_logits) and torch.equal(a.v, b.v)

    # Fine-tune an IQL network on [Breakout, Boxing]: Breakout's Q, policy and V heads come from
    # the source (at the new head index 0), Boxing's are fresh.
    cfg = _algorithm_config("iql", "games=[Breakout, Boxing]", "model.feature_dim=16")
    torch.manual_seed(1)
    new = build_model(cfg).eval()
    report = new.init_from(net)
    assert report == {"reused_heads": ["Breakout"], "new_heads": ["Boxing"], "variant_heads": {}}
    got = new(obs[1:], t([0]))
    want = net(obs[1:], t([1]))
    n = net.action_counts[1]
    assert torch.allclose(got.q[0, :n], want.q[0, :n]) and torch.allclose(got.v, want.v)
    assert torch.allclose(got.policy_logits[0, :n], want.policy_logits[0, :n])

    # A Q-learning network fine-tuned as IQL: backbone and Q head reused, the IQL heads fresh.
    cfg_q = load_config(None, ["games=[Pong, Breakout]", "model.feature_dim=16"])
    q_net = build_model(cfg_q)
    iql = _net("iql")
    fresh_v = iql.value_head.weight.clone()
    iql.init_from(q_net)
    assert torch.equal(iql.value_head.weight, fresh_v)
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    assert torch.equal(iql(x, game).q, q_net(x, game).q)


def _batch(action, reward, discount):
    return SimpleNamespace(action=t(action), reward=t(reward), discount=t(discount), mc_return=None,
                           game=t([0] * len(action)))


def test_iql_total_on_hand_numbers():
    # Q(s) = [[1, 2], [0, 3]], data actions [1, 0]; Q_target(s, a_data) = [2, 1]; V(s) = [1.5, 0.5];
    # V(s') = [1, 2]; r = [1, 0]; discount = [0.5, 0].
    #  L_V: u = [0.5, 0.5] > 0, weight tau = 0.7: 0.7 * 0.25 = 0.175.
    #  L_Q: y = [1 + 0.5 * 1, 0 + 0] = [1.5, 0], Q(s, a) = [2, 0]: Huber(0.5) = 0.125, 0 -> mean 0.0625.
    #  L_pi: A = [0.5, 0.5], beta = 2: w = e; uniform logits: -log pi = ln 2 -> e ln 2.
    q = t([[1.0, 2.0], [0.0, 3.0]], requires_grad=True)
    v = t([1.5, 0.5], requires_grad=True)
    logits = t([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    feats = torch.zeros(2, 3)
    out = SimpleNamespace(q=q, logits=None, features=feats, policy_logits=logits, v=v)
    nxt = SimpleNamespace(q=torch.zeros(2, 2), logits=None, features=feats, policy_logits=None, v=t([1.0, 2.0]))
    tgt = SimpleNamespace(q=t([[0.0, 2.0], [1.0, 5.0]]), logits=None, features=feats, policy_logits=None, v=None)
    cfg = LossConfig(algorithm="iql", iql_expectile=0.7, iql_beta=2.0, dr3_coef=0.0, huber_delta=1.0)
    loss, metrics = ALGORITHMS["iql"](cfg)(NetworkOutputs(out, nxt, None, tgt), _batch([1, 0], [1.0, 0.0], [0.5, 0.0]))
    torch.testing.assert_close(metrics["loss/value"], t(0.175))
    torch.testing.assert_close(metrics["loss/td"], t(0.0625))
    torch.testing.assert_close(metrics["loss/policy"], t(math.e * math.log(2)))
    torch.testing.assert_close(loss.detach(), t(0.175 + 0.0625 + math.e * math.log(2)))
    loss.backward()
    # V's gradient: d/dV 0.7 u^2 / 2 = -0.7 u = -0.35 per sample; Q's only at the data actions.
    torch.testing.assert_close(v.grad, t([-0.35, -0.35]))
    assert q.grad[0, 0] == 0 and q.grad[1, 1] == 0 and q.grad[0, 1] > 0


def test_bc_trains_the_per_game_head_as_a_classifier():
    q = t([[0.0, 0.0, -INF], [2.0, 0.0, 0.0]], requires_grad=True)
    out = SimpleNamespace(q=q, logits=None, features=torch.zeros(2, 3), policy_logits=None, v=None)
    loss, metrics = ALGORITHMS["bc"](LossConfig(algorithm="bc"))(NetworkOutputs(out), _batch([0, 0], [0.0, 0.0], [0.0, 0.0]))
    # Row 0: -log(1/2) = ln 2; row 1: -log(e^2 / (e^2 + 2)).
    torch.testing.assert_close(loss.detach(), t((math.log(2) + math.log1p(2 * math.exp(-2))) / 2))
    torch.testing.assert_close(metrics["bc/accuracy"], t(1.0))


def test_brac_is_q_learning_plus_alpha_kl_plus_the_behaviour_head_bc():
    q = t([[1.0, 2.0, -INF], [0.5, -1.0, 3.0]], requires_grad=True)
    logits = t([[0.0, 1.0, -INF], [0.0, 0.0, 0.0]], requires_grad=True)
    feats = torch.ones(2, 4)
    out = SimpleNamespace(q=q, logits=None, features=feats, policy_logits=logits, v=None)
    nxt = SimpleNamespace(q=torch.zeros(2, 3), logits=None, features=feats, policy_logits=None, v=None)
    batch = _batch([0, 2], [1.0, 0.0], [0.9, 0.0])
    cfg = LossConfig(algorithm="brac", cql_alpha=0.0, dr3_coef=0.0, brac_alpha=0.5, brac_temperature=2.0)
    loss, metrics = ALGORITHMS["brac"](cfg)(NetworkOutputs(out, nxt, nxt), batch)
    td, _ = total_loss(out, nxt, nxt, batch, cfg)
    kl, _ = brac_penalty(q, logits, 2.0)
    bc, _ = bc_loss(logits, batch.action)
    torch.testing.assert_close(loss, td + 0.5 * kl + bc)
    torch.testing.assert_close(metrics["loss/brac"], kl.detach())
    # The KL trains Q, not the behaviour head: pi_b's gradient is the BC loss's alone.
    loss.backward()
    logits_only = logits.detach().clone().requires_grad_(True)
    bc_loss(logits_only, batch.action)[0].backward()
    torch.testing.assert_close(logits.grad, logits_only.grad)


def test_unknown_algorithm_lists_the_valid_ones():
    with pytest.raises(ValueError, match="one of q_learning, bc, iql, brac"):
        algorithm_class(LossConfig(algorithm="awac"))


@pytest.mark.parametrize("algorithm", ["bc", "iql", "brac"])
def test_training_runs_with_each_algorithm_and_resumes(tmp_path, debug_dataset, algorithm):
    from scaled_ql.train.trainer import pretrain
    from tests.conftest import debug_config

    overrides = [f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=6", f"loss.algorithm={algorithm}",
                 "train.checkpoint_every=3", "model.value=scalar", *ALGORITHMS[algorithm].model_overrides()]
    result = pretrain(debug_config(tmp_path, *overrides), progress=False)
    assert result.step == 6
    saved = MultiGameQNetwork.from_pretrained(result.checkpoint / "model")
    assert saved.model_cfg.act_with == ("policy" if algorithm == "iql" else "q")
    assert (saved.policy_head is not None) == (algorithm != "bc")
    again = pretrain(debug_config(tmp_path, *overrides[:2], "train.steps=8", *overrides[3:]), resume=True, progress=False)
    assert again.step == 8


@pytest.mark.parametrize("algorithm,calibrated", [(a, False) for a in ALGORITHMS] + [("q_learning", True), ("brac", True)])
def test_every_algorithm_trains_on_the_passes_and_heads_it_declares(algorithm, calibrated):
    """A conformance check over the registry: built from a config with the heads it declares, each
    algorithm runs on exactly the forward passes it declares (the others are None) and its loss
    reaches the network."""
    from scaled_ql.losses import make_algorithm
    from scaled_ql.train.step import compute_loss, forward_passes

    cfg = _algorithm_config(algorithm, "games=[Pong, Breakout]", "model.feature_dim=16", f"loss.calibrated={str(calibrated).lower()}")
    torch.manual_seed(0)
    model, target = build_model(cfg), build_model(cfg)
    algo = make_algorithm(cfg)
    assert algo.name == ("calql" if calibrated and algorithm == "q_learning" else algorithm)
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    batch = TorchBatch(obs=obs, next_obs=obs.flip(0), action=t([0, 1, 2, 1]), reward=t([1.0, 0.0, 0.0, -1.0]),
                       discount=t([0.99, 0.99, 0.0, 0.99]), game=t([0, 0, 1, 1]), mc_return=t([1.0, 0.5, 0.0, -0.5]),
                       groups=((0, 1), 2))  # the sampler's balanced layout, as the training loop passes it
    outputs = forward_passes(model, target, batch, algo)
    for name in ("next_online", "next_target", "target"):
        assert (getattr(outputs, name) is not None) == getattr(algo.passes, name), name
    loss, metrics = compute_loss(model, target, batch, algo)
    assert torch.isfinite(loss) and torch.equal(metrics["loss/total"], loss.detach())
    loss.backward()
    assert next(model.backbone.parameters()).grad is not None


def test_without_dr3_s_prime_runs_without_gradient_and_the_update_is_the_same():
    """With ``loss.dr3_coef=0`` the loss sends no gradient through the online network on s', so the
    step reads s' without gradient (half the backward); the loss and every gradient equal those of
    the one pass over s and s' that DR3 needs."""
    from scaled_ql.losses import make_algorithm
    from scaled_ql.train.step import compute_loss

    cfg = load_config(None, ["games=[Pong, Breakout]", "model.feature_dim=16", "loss.dr3_coef=0", "loss.cql_alpha=1.0",
                             "train.batch_size=4"])
    torch.manual_seed(0)
    model, target = build_model(cfg), build_model(cfg)
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    batch = TorchBatch(obs=obs, next_obs=obs.flip(0), action=t([0, 1, 2, 1]).long(), reward=t([1.0, 0.0, 0.0, -1.0]),
                       discount=t([0.99, 0.99, 0.0, 0.99]), game=t([0, 0, 1, 1]).long(), groups=((0, 1), 2))
    algo = make_algorithm(cfg)
    assert algo.next_online_grad is False and make_algorithm(load_config(None, ["loss.dr3_coef=0.03"])).next_online_grad

    class OnePass(type(algo)):
        next_online_grad = True

    results = []
    for a in (algo, OnePass(algo.loss)):
        model.zero_grad()
        loss, _ = compute_loss(model, target, batch, a)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0])
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-5, atol=1e-6, msg=name)
