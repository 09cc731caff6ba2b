"""Hand-checked numbers for the losses (scaled_ql.losses): every expected value below can be
worked out on paper from the docstring formulas."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from scaled_ql.config import LossConfig
from scaled_ql.losses import (
    VALUE_KINDS,
    c51_td_loss,
    categorical_projection,
    cql_penalty,
    double_q_target_scalar,
    dr3_penalty,
    gather_actions,
    hl_gauss_target,
    hl_gauss_td_loss,
    per_game_q,
    scalar_td_loss,
    total_loss,
)

INF = float("inf")
t = torch.tensor


# ---------------------------------------------------------------------------------------- TD


def test_double_q_target_uses_online_argmax_and_target_value():
    reward, discount = t([1.0, 0.0, 2.0]), t([0.5, 0.9, 0.0])
    # Row 0: online prefers action 1, target prefers action 0. Row 1: action 0 is missing (-inf)
    # in both nets. Row 2: terminal (discount 0).
    next_q_online = t([[1.0, 3.0, 0.0], [-INF, -5.0, -7.0], [4.0, 1.0, 0.0]])
    next_q_target = t([[5.0, 2.0, 0.0], [-INF, -1.0, -3.0], [9.0, 9.0, 9.0]])
    double = double_q_target_scalar(reward, discount, next_q_online, next_q_target, double_q=True)
    plain = double_q_target_scalar(reward, discount, next_q_online, next_q_target, double_q=False)
    torch.testing.assert_close(double, t([1 + 0.5 * 2.0, 0.9 * -1.0, 2.0]))  # Q_target(s', argmax Q_online)
    torch.testing.assert_close(plain, t([1 + 0.5 * 5.0, 0.9 * -1.0, 2.0]))  # max_a Q_target(s', a)


def test_double_q_target_has_no_gradient():
    next_q = torch.zeros(2, 3, requires_grad=True)
    y = double_q_target_scalar(t([1.0, 1.0]), t([0.9, 0.9]), next_q, next_q, double_q=True)
    assert not y.requires_grad


def test_huber_loss_small_and_large_error():
    q = torch.tensor([[0.5, 9.0], [2.0, 0.0]], requires_grad=True)
    action, target = t([0, 0]), t([0.0, 5.0])
    loss, td_error = scalar_td_loss(q, action, target, huber_delta=1.0)
    # errors -0.5 (quadratic: 0.5 * 0.25 = 0.125) and 3 (linear: 1 * (3 - 0.5) = 2.5); mean 1.3125
    torch.testing.assert_close(loss, t(1.3125))
    torch.testing.assert_close(td_error, t([-0.5, 3.0]))
    loss.backward()
    # d/dQ: (Q - y)/B inside delta, delta*sign(Q - y)/B outside; other actions get nothing
    torch.testing.assert_close(q.grad, t([[0.25, 0.0], [-0.5, 0.0]]))


def test_huber_target_is_detached():
    q = torch.zeros(1, 2, requires_grad=True)
    target = torch.ones(1, requires_grad=True)
    scalar_td_loss(q, t([0]), target)[0].backward()
    assert target.grad is None


# ------------------------------------------------------------------------------------- C51


def test_projection_hand_case_three_atoms():
    support = t([-1.0, 0.0, 1.0])
    probs = t([[0.2, 0.3, 0.5]])
    # reward 0.5, discount 0: every atom lands on 0.5, halfway between z=0 and z=1
    out = categorical_projection(0.5 + 0.0 * support[None], probs, support)
    torch.testing.assert_close(out, t([[0.0, 0.5, 0.5]]))


def test_projection_clips_outside_support_to_edges():
    support = t([-1.0, 0.0, 1.0])
    probs = t([[0.2, 0.3, 0.5], [0.2, 0.3, 0.5]])
    target_support = torch.stack([5.0 + support, -5.0 + support])  # all above v_max / below v_min
    out = categorical_projection(target_support, probs, support)
    torch.testing.assert_close(out, t([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))


def test_projection_conserves_mass_and_mean():
    torch.manual_seed(0)
    support = torch.linspace(-2.0, 2.0, 5)
    probs = torch.randn(4, 5).softmax(-1)
    reward, discount = t([0.5, -0.3, 0.0, 1.2]), t([0.5, 0.8, 1.0, 0.3])
    target_support = reward[:, None] + discount[:, None] * support  # all inside [-2, 2]
    out = categorical_projection(target_support, probs, support)
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(-1), torch.ones(4))
    torch.testing.assert_close((out * support).sum(-1), reward + discount * (probs * support).sum(-1))
    # A shift that leaves the support loses mean (clipped) but never mass.
    out = categorical_projection(support[None] + 3.0, probs[:1], support)
    torch.testing.assert_close(out.sum(-1), torch.ones(1))


def _c51_inputs():
    support = t([-1.0, 0.0, 1.0])
    logits = torch.zeros(1, 2, 3, requires_grad=True)  # uniform online distributions
    # next state: action 0 puts its mass on z=-1, action 1 on z=+1
    next_logits = t([[[20.0, 0.0, 0.0], [0.0, 0.0, 20.0]]])
    next_q_online = t([[0.0, 1.0]])  # online prefers action 1
    next_q_target = t([[1.0, 0.0]])  # target prefers action 0
    return support, logits, next_logits, next_q_online, next_q_target


def test_c51_loss_gradient_moves_mass_to_target_atom():
    support, logits, next_logits, next_q_online, next_q_target = _c51_inputs()
    # reward 1, discount 0: the whole target mass sits on z=+1 (atom 2)
    loss, td_error = c51_td_loss(logits, t([0]), t([1.0]), t([0.0]), next_logits, next_q_online, next_q_target, support, True)
    torch.testing.assert_close(loss, t(math.log(3.0)))  # -log(1/3)
    torch.testing.assert_close(td_error, t([1.0]))  # target mean 1, online mean 0
    loss.backward()
    grad = logits.grad[0]
    torch.testing.assert_close(grad[0], t([1 / 3, 1 / 3, -2 / 3]))  # softmax - target
    assert torch.equal(grad[1], torch.zeros(3))  # other action untouched
    with torch.no_grad():  # raising the target atom's logit lowers the loss
        bumped = logits.detach().clone()
        bumped[0, 0, 2] += 0.1
        lower, _ = c51_td_loss(bumped, t([0]), t([1.0]), t([0.0]), next_logits, next_q_online, next_q_target, support, True)
    assert lower < loss


def test_c51_double_q_picks_next_action_with_online_net():
    support, logits, next_logits, next_q_online, next_q_target = _c51_inputs()
    args = (logits, t([0]), t([0.0]), t([1.0]), next_logits, next_q_online, next_q_target, support)
    _, double = c51_td_loss(*args, True)  # a* = 1 -> target mass on z=+1
    _, plain = c51_td_loss(*args, False)  # a* = 0 -> target mass on z=-1
    torch.testing.assert_close(double, t([1.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(plain, t([-1.0]), atol=1e-6, rtol=0)


# -------------------------------------------------------------------------------- HL-Gauss


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def test_hl_gauss_target_three_bins_by_hand():
    # bins [-1.5, -0.5], [-0.5, 0.5], [0.5, 1.5] (centers -1, 0, 1); y = 0; sigma = 1 bin width = 1
    middle = _normal_cdf(0.5) - _normal_cdf(-0.5)  # 0.3829
    side = _normal_cdf(1.5) - _normal_cdf(0.5)  # 0.2417
    inside = middle + 2 * side  # 0.8664: the 13% outside [-1.5, 1.5] is renormalized away
    probs = hl_gauss_target(t([0.0]), t([-1.0, 0.0, 1.0]), sigma=1.0)
    torch.testing.assert_close(probs, t([[side, middle, side]]) / inside)
    torch.testing.assert_close(probs, t([[0.2790, 0.4419, 0.2790]]), atol=1e-4, rtol=0)


def test_hl_gauss_target_mass_is_one_and_mean_is_kept_inside_the_support():
    support = torch.arange(-4.5, 5.0, 1.0)  # 10 bins of width 1 tiling [-5, 5]
    target = t([0.3, -1.7, 2.25, 0.0])  # at least 3 sigma (2.25) from either edge
    probs = hl_gauss_target(target, support, sigma=0.75)
    assert probs.shape == (4, 10) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    # The binned Gaussian's mean (over the centers) matches y up to the mass cut off by the
    # edges (< 1e-3 here) and the binning error (~exp(-2 pi^2 sigma^2) ~ 1e-5).
    torch.testing.assert_close((probs * support).sum(-1), target, atol=2e-3, rtol=0)


def test_hl_gauss_target_tiny_sigma_puts_all_mass_in_the_bin_of_the_target():
    support = torch.arange(-4.5, 5.0, 1.0)
    probs = hl_gauss_target(t([0.5, -4.5, 3.2]), support, sigma=0.01)
    for row, bin_ in zip(probs, (5, 0, 8)):  # centre of bin 5 [0, 1], of bin 0 [-5, -4]; inside bin 8 [3, 4]
        assert row[bin_] > 0.999 and row.argmax() == bin_


def test_hl_gauss_target_beyond_the_support_lands_on_the_edge_bins():
    support = torch.arange(-4.5, 5.0, 1.0)
    probs = hl_gauss_target(t([5.0, 7.0, 1e6, -1e6]), support, sigma=0.75)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    # y clamped to the edge 5: last bin P(-1.33 < Z < 0) / P(Z < 0) = 0.818, next P(-2.67 < Z < -1.33) / 0.5
    last = (0.5 - _normal_cdf(-1 / 0.75)) / 0.5
    next_ = (_normal_cdf(-1 / 0.75) - _normal_cdf(-2 / 0.75)) / 0.5
    for row in probs[:3]:
        torch.testing.assert_close(row[-2:], t([next_, last]), atol=1e-5, rtol=0)
        assert row[-2:].sum() > 0.99
    torch.testing.assert_close(probs[3], probs[0].flip(0))  # below v_min: the mirror image


def test_hl_gauss_loss_gradient_raises_the_logit_of_the_target_bin():
    support = torch.arange(-4.5, 5.0, 1.0)
    logits = torch.zeros(2, 3, 10, requires_grad=True)  # uniform online distributions
    action, target = t([1, 2]), t([2.5, -3.0])  # bin 7's centre; the edge between bins 1 and 2
    loss, td_error = hl_gauss_td_loss(logits, action, target, support, sigma=0.75)
    torch.testing.assert_close(loss, t(math.log(10.0)))  # -sum_i p_i log(1/10), whatever p
    torch.testing.assert_close(td_error, target)  # uniform online mean is 0
    loss.backward()
    probs = hl_gauss_target(target, support, 0.75)
    torch.testing.assert_close(logits.grad[0, 1], (0.1 - probs[0]) / 2)  # (softmax - target) / B
    assert logits.grad[0, 1].argmin() == 7 and logits.grad[0, 1, 7] < 0  # descent raises bin 7
    assert logits.grad[1, 2, 1] < 0 and logits.grad[1, 2, 2] < 0
    torch.testing.assert_close(logits.grad[1, 2, 1], logits.grad[1, 2, 2])  # target on their shared edge
    assert torch.equal(logits.grad[0, 0], torch.zeros(10)) and torch.equal(logits.grad[1, :2], torch.zeros(2, 10))
    with torch.no_grad():  # a step along the gradient lowers the loss
        lower, _ = hl_gauss_td_loss(logits - 1.0 * logits.grad, action, target, support, sigma=0.75)
    assert lower < loss


def test_hl_gauss_target_is_detached():
    target = torch.zeros(1, requires_grad=True)
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    hl_gauss_td_loss(logits, t([0]), target, t([-1.0, 0.0, 1.0]), 0.75)[0].backward()
    assert target.grad is None and logits.grad is not None


# ------------------------------------------------------------------------------------- CQL


def test_cql_hand_value_ignores_missing_action_and_pushes_data_action_up():
    q = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, -INF]], requires_grad=True)
    action = t([2, 0])
    penalty, metrics = cql_penalty(q, action)
    row0 = math.log(math.e**1 + math.e**2 + math.e**3) - 3.0
    row1 = math.log(2.0) - 0.0  # the -inf action adds nothing
    torch.testing.assert_close(penalty, t((row0 + row1) / 2))
    assert set(metrics) == {"q/logsumexp"}
    penalty.backward()
    grad = q.grad
    assert torch.isfinite(grad).all() and grad[1, 2] == 0
    # gradient descent: data action up (negative grad), the others down (positive grad)
    assert grad[0, 2] < 0 and grad[1, 0] < 0
    assert grad[0, 0] > 0 and grad[0, 1] > 0 and grad[1, 1] > 0
    torch.testing.assert_close(grad[1, :2], t([-0.25, 0.25]))  # (softmax - onehot) / B


# ------------------------------------------------------------------------------------- DR3


def test_dr3_hand_value_abs_of_each_dot_product_then_mean():
    features = torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True)
    next_features = torch.tensor([[1.0, 1.0], [1.0, 4.0]], requires_grad=True)
    value = dr3_penalty(features, next_features)
    # dots 3 and -1 -> mean(|3|, |-1|) = 2 (not |mean| = 1, not mean of sum of |products| = 5)
    torch.testing.assert_close(value, t(2.0))
    value.backward()
    assert next_features.grad is not None and features.grad is not None  # both sides get gradient
    torch.testing.assert_close(features.grad, t([[0.5, 0.5], [-0.5, -2.0]]))  # sign(dot) * phi(s') / B


def test_dr3_zero_for_orthogonal_features():
    assert dr3_penalty(t([[1.0, 0.0], [0.0, 2.0]]), t([[0.0, 1.0], [3.0, 0.0]])) == 0


# ------------------------------------------------------------------------------------- total


def _scalar_outputs():
    out = SimpleNamespace(
        q=torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, -INF]], requires_grad=True),
        logits=None,
        features=torch.tensor([[1.0, 2.0], [3.0, -1.0]], requires_grad=True),
    )
    next_online = SimpleNamespace(q=t([[0.0, 1.0, 0.0], [2.0, 0.0, -INF]]), logits=None, features=t([[1.0, 1.0], [1.0, 4.0]]))
    next_target = SimpleNamespace(q=t([[3.0, 1.0, 0.0], [1.0, 5.0, -INF]]), logits=None, features=torch.zeros(2, 2))
    batch = SimpleNamespace(action=t([2, 0]), reward=t([1.0, 0.0]), discount=t([0.9, 0.5]), game=t([0, 1]))
    return out, next_online, next_target, batch


KEYS = {"loss/total", "loss/td", "loss/cql", "loss/dr3", "q/data", "q/pi", "q/target", "q/logsumexp"}


def test_total_loss_without_penalties_is_the_td_loss():
    out, next_online, next_target, batch = _scalar_outputs()
    loss, metrics = total_loss(out, next_online, next_target, batch, LossConfig(cql_alpha=0.0, dr3_coef=0.0))
    # double-Q targets: row 0 a*=1 -> 1 + 0.9 * 1 = 1.9; row 1 a*=0 -> 0 + 0.5 * 1 = 0.5
    target = t([1.9, 0.5])
    td, _ = scalar_td_loss(out.q, batch.action, target)
    torch.testing.assert_close(loss, td)
    # errors 3 - 1.9 = 1.1 (linear: 0.6) and 0.5 - 0.5 = 0 -> mean 0.3
    torch.testing.assert_close(loss, t(0.3))
    assert set(metrics) == KEYS
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    torch.testing.assert_close(metrics["q/data"], t((3.0 + 0.5) / 2))
    torch.testing.assert_close(metrics["q/pi"], t((3.0 + 0.5) / 2))
    torch.testing.assert_close(metrics["q/target"], t((1.9 + 0.5) / 2))
    torch.testing.assert_close(metrics["loss/dr3"], t(2.0))  # reported though unweighted
    loss.backward()
    assert out.features.grad is None  # unweighted DR3 is not in the graph


def test_total_loss_adds_weighted_penalties():
    out, next_online, next_target, batch = _scalar_outputs()
    loss, metrics = total_loss(out, next_online, next_target, batch, LossConfig(cql_alpha=0.5, dr3_coef=0.1))
    cql, _ = cql_penalty(out.q, batch.action)
    torch.testing.assert_close(loss, 0.3 + 0.5 * cql + 0.1 * 2.0)
    torch.testing.assert_close(metrics["loss/total"], loss.detach())
    loss.backward()
    assert out.features.grad is not None


def test_total_loss_c51_matches_c51_td_loss():
    support, logits, next_logits, next_q_online, next_q_target = _c51_inputs()
    out = SimpleNamespace(q=torch.zeros(1, 2), logits=logits, features=torch.ones(1, 2))
    next_online = SimpleNamespace(q=next_q_online, logits=None, features=torch.ones(1, 2))
    next_target = SimpleNamespace(q=next_q_target, logits=next_logits, features=torch.ones(1, 2))
    batch = SimpleNamespace(action=t([0]), reward=t([1.0]), discount=t([0.0]), game=t([0]))
    cfg = LossConfig(cql_alpha=0.0, dr3_coef=0.0)
    loss, metrics = total_loss(out, next_online, next_target, batch, cfg, value="c51", support=support)
    torch.testing.assert_close(loss, t(math.log(3.0)))
    torch.testing.assert_close(metrics["q/target"], t(1.0))
    with pytest.raises(ValueError, match="^support: expected a tensor for the 'c51' TD loss"):
        total_loss(out, next_online, next_target, batch, cfg, value="c51", support=None)


def _distributional_outputs():
    """Two samples, 2 actions, 4 bins/atoms on z = [-1.5, -0.5, 0.5, 1.5] (HL-Gauss edges -2..2)."""
    support = t([-1.5, -0.5, 0.5, 1.5])
    logits = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]], [[0.0, 1.0, 1.0, 0.0], [3.0, 0.0, 0.0, 0.0]]], requires_grad=True)
    q = (logits.softmax(-1) * support).sum(-1)
    out = SimpleNamespace(q=q, logits=logits, features=torch.ones(2, 2))
    next_logits = t([[[0.0, 0.0, 0.0, 5.0], [5.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0]]])
    next_target = SimpleNamespace(q=(next_logits.softmax(-1) * support).sum(-1), logits=next_logits, features=torch.ones(2, 2))
    next_online = SimpleNamespace(q=t([[1.0, 0.0], [0.0, 1.0]]), logits=None, features=torch.ones(2, 2))  # a* = 0, 1
    batch = SimpleNamespace(action=t([1, 0]), reward=t([0.5, -0.2]), discount=t([0.9, 0.0]), game=t([0, 0]))
    return support, out, next_online, next_target, batch


@pytest.mark.parametrize("value", sorted(VALUE_KINDS))
def test_total_loss_dispatches_on_value_kind(value):
    cfg = LossConfig(cql_alpha=0.0, dr3_coef=0.0)
    if value == "scalar":
        out, next_online, next_target, batch = _scalar_outputs()
        loss, _ = total_loss(out, next_online, next_target, batch, cfg, value="scalar")
        torch.testing.assert_close(loss, t(0.3))  # the Huber case worked out above
        return
    support, out, next_online, next_target, batch = _distributional_outputs()
    loss, metrics = total_loss(out, next_online, next_target, batch, cfg, value=value, support=support, hl_gauss_sigma=0.5)
    y = batch.reward + batch.discount * next_target.q[[0, 1], [0, 1]]  # double Q: a* from the online net
    torch.testing.assert_close(metrics["q/target"], y.mean())
    if value == "c51":
        expected, _ = c51_td_loss(out.logits, batch.action, batch.reward, batch.discount, next_target.logits,
                                  next_online.q, next_target.q, support, True)
    else:
        expected, _ = hl_gauss_td_loss(out.logits, batch.action, y, support, sigma=0.5)
    torch.testing.assert_close(loss, expected)
    others = {k: total_loss(out, next_online, next_target, batch, cfg, value=k, support=support, hl_gauss_sigma=0.5)[0]
              for k in VALUE_KINDS if k != value and VALUE_KINDS[k].distributional}
    assert all(not torch.allclose(loss, other) for other in others.values())  # the kinds really differ
    loss.backward()
    assert out.logits.grad is not None


def test_total_loss_hl_gauss_adds_cql_on_the_expected_q():
    support, out, next_online, next_target, batch = _distributional_outputs()
    td, _ = total_loss(out, next_online, next_target, batch, LossConfig(cql_alpha=0.0, dr3_coef=0.0), value="hl_gauss", support=support)
    loss, metrics = total_loss(out, next_online, next_target, batch, LossConfig(cql_alpha=0.5, dr3_coef=0.0), value="hl_gauss", support=support)
    torch.testing.assert_close(loss, td + 0.5 * cql_penalty(out.q, batch.action)[0])
    torch.testing.assert_close(metrics["q/data"], out.q[[0, 1], [1, 0]].mean())


def test_total_loss_value_kind_errors():
    support, out, next_online, next_target, batch = _distributional_outputs()
    cfg = LossConfig()
    with pytest.raises(ValueError, match=r"^value: unknown value kind 'quantile'; valid: c51, hl_gauss, scalar$"):
        total_loss(out, next_online, next_target, batch, cfg, value="quantile", support=support)
    with pytest.raises(ValueError, match=r"^out.logits: expected None for value 'scalar'.*c51, hl_gauss"):
        total_loss(out, next_online, next_target, batch, cfg, value="scalar")
    s_out, s_next_online, s_next_target, s_batch = _scalar_outputs()
    with pytest.raises(ValueError, match=r"^out.logits: expected a tensor for the 'hl_gauss' TD loss, found None"):
        total_loss(s_out, s_next_online, s_next_target, s_batch, cfg, value="hl_gauss", support=support)


def test_total_loss_shape_errors_name_the_culprit():
    out, next_online, next_target, batch = _scalar_outputs()
    batch.reward = batch.reward[:, None]  # [B, 1] would broadcast to [B, B] silently
    with pytest.raises(ValueError, match=r"reward.*\[B\].*\[2, 1\]"):
        total_loss(out, next_online, next_target, batch, LossConfig())
    out, next_online, next_target, batch = _scalar_outputs()
    with pytest.raises(ValueError, match="next_out_online"):
        total_loss(out, None, next_target, batch, LossConfig(double_q=True))
    loss, metrics = total_loss(out, None, next_target, batch, LossConfig(double_q=False, dr3_coef=0.0))
    assert "loss/dr3" not in metrics


@pytest.mark.parametrize(
    "call, culprit",
    [
        (lambda: scalar_td_loss(torch.zeros(2, 3), t([0, 1]), torch.zeros(2, 1)), "target"),
        (lambda: scalar_td_loss(torch.zeros(2, 3), t([0, 1], dtype=torch.int32), torch.zeros(2)), "action"),
        (lambda: double_q_target_scalar(torch.zeros(2), torch.zeros(2, 1), torch.zeros(2, 3), torch.zeros(2, 3), True), "discount"),
        (lambda: cql_penalty(torch.zeros(2, 3), t([[0], [1]])), "action"),
        (lambda: dr3_penalty(torch.zeros(2, 4), torch.zeros(2, 5)), "next_features"),
        (lambda: categorical_projection(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(3)), "probs"),
        (
            lambda: c51_td_loss(torch.zeros(2, 3, 5), t([0, 1]), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 3, 5),
                                torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(5), True),
            "reward",
        ),
        (lambda: hl_gauss_target(torch.zeros(2, 1), torch.zeros(5), 0.75), "target"),
        (lambda: hl_gauss_target(torch.zeros(2), torch.zeros(5, 1), 0.75), "support"),
        (lambda: hl_gauss_target(torch.zeros(2), torch.linspace(-1, 1, 5), 0.0), "sigma"),
        (lambda: hl_gauss_td_loss(torch.zeros(2, 3, 5), t([0, 1]), torch.zeros(2, 1), torch.zeros(5), 0.75), "target"),
        (lambda: hl_gauss_td_loss(torch.zeros(2, 3, 5), t([0, 1]), torch.zeros(2), torch.zeros(4), 0.75), "support"),
        (lambda: per_game_q(torch.zeros(4), t([0, 1]), 2), "game"),
    ],
)
def test_shape_errors_raise_value_error_naming_the_argument(call, culprit):
    with pytest.raises(ValueError, match=f"^{culprit}: expected"):
        call()


def test_per_game_q_by_hand():
    q_data, game = t([1.0, 3.0, 5.0, 10.0]), t([0, 0, 2, 2])
    out = per_game_q(q_data, game, num_games=3)
    torch.testing.assert_close(out, t([2.0, float("nan"), 7.5]), equal_nan=True)


def test_gather_actions_vectors_and_atoms():
    values = torch.arange(12.0).view(2, 3, 2)
    assert torch.equal(gather_actions(values, t([2, 0])), t([[4.0, 5.0], [6.0, 7.0]]))
    assert torch.equal(gather_actions(values[..., 0], t([2, 0])), t([4.0, 6.0]))
