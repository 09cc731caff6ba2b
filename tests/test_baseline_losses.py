"""Hand-checked numbers for Cal-QL, behaviour cloning, IQL and BRAC (scaled_ql.losses.calql, bc,
iql, brac), and the sampler's Monte-Carlo return-to-go (Batch.mc_return) on the fixture dataset.
Every expected value below can be worked out on paper from the docstring formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fixtures import write_synthetic_dataset

from scaled_ql.data.batch import Batch
from scaled_ql.data.sampler import Sampler, discounted_returns_to_go
from scaled_ql.data.store import ReplayStore
from scaled_ql.losses.bc import bc_loss
from scaled_ql.losses.brac import brac_penalty
from scaled_ql.losses.calql import calql_penalty
from scaled_ql.losses.cql import cql_penalty
from scaled_ql.losses.iql import iql_policy_loss, iql_q_loss, iql_value_loss

INF = float("inf")
LN2, LN3 = math.log(2), math.log(3)
t = torch.tensor


# ------------------------------------------------------------------------------------ Cal-QL


def calql_case():
    # Row 0: V_ref = 1 lifts Q = 0 to 1; Q = 1 ties V_ref (not clipped); action 2 is absent (-inf)
    #        and must stay out: logsumexp(1, 1) = 1 + ln 2 (ln(3e) if -inf were lifted to 1).
    # Row 1: V_ref = -1 is below every Q: plain CQL, logsumexp(0, 0, 0) = ln 3.
    # Row 2: V_ref = 0 lifts both valid actions: logsumexp(0, 0) = ln 2, data Q = -2.
    q = t([[0.0, 1.0, -INF], [0.0, 0.0, 0.0], [-2.0, -INF, -1.0]], requires_grad=True)
    return q, t([1, 2, 0]), t([1.0, -1.0, 0.0])


def test_calql_penalty_clips_the_push_down_term_from_below():
    q, action, mc_return = calql_case()
    penalty, metrics = calql_penalty(q, action, mc_return)
    # (1 + ln2 - 1) + (ln3 - 0) + (ln2 - (-2)), over 3 samples
    torch.testing.assert_close(penalty, t((LN2 + LN3 + 2 + LN2) / 3))
    # (sample, valid action) pairs: 2 + 3 + 2 = 7, of which 1 + 0 + 2 have Q < V_ref.
    torch.testing.assert_close(metrics["calql/clipped_fraction"], t(3 / 7))
    torch.testing.assert_close(metrics["q/logsumexp_calibrated"], t((1 + LN2 + LN3 + LN2) / 3))
    assert not metrics["calql/clipped_fraction"].requires_grad


def test_calql_gradient_skips_clipped_and_absent_actions():
    q, action, mc_return = calql_case()
    calql_penalty(q, action, mc_return)[0].backward()
    # Row 0: clipped action 0 gets no push-down; action 1 has softmax weight e/(e+e) = 1/2, minus 1
    # for the data term. Row 1: CQL's softmax 1/3 each minus 1 at the data action. Row 2: both
    # valid actions clipped, only the data term's -1 remains. All over B = 3.
    expected = t([[0.0, -1 / 2, 0.0], [1 / 3, 1 / 3, -2 / 3], [-1.0, 0.0, 0.0]]) / 3
    torch.testing.assert_close(q.grad, expected)


def test_calql_with_minus_infinite_reference_is_cql():
    q, action, _ = calql_case()
    cal, metrics = calql_penalty(q, action, t([-INF, -INF, -INF]))
    torch.testing.assert_close(cal, cql_penalty(q, action)[0])
    assert metrics["calql/clipped_fraction"].item() == 0.0


def test_calql_shape_traps():
    q, action, mc_return = calql_case()
    with pytest.raises(ValueError, match=r"mc_return: expected shape \[B\] = \[3\], found \[3, 1\]"):
        calql_penalty(q, action, mc_return[:, None])  # [B, 1] would broadcast to [B, B] in max()
    with pytest.raises(ValueError, match=r"action: expected dtype torch.int64"):
        calql_penalty(q, action.int(), mc_return)
    with pytest.raises(ValueError, match="mc_return: expected a floating-point tensor"):
        calql_penalty(q, action, t([1, 0, 0]))


# -------------------------------------------------------------------------------------- BC


def test_bc_loss_cross_entropy_accuracy_and_masked_actions():
    # Row 0: three valid actions at equal logits, data action 1: -ln(1/3) = ln 3; argmax picks 0 (wrong).
    # Row 1: probabilities (1/4, 3/4) over the two valid actions, data action 1: -ln(3/4); argmax right.
    logits = t([[0.0, 0.0, -INF, 0.0], [0.0, LN3, -INF, -INF]], requires_grad=True)
    loss, metrics = bc_loss(logits, t([1, 1]))
    torch.testing.assert_close(loss, t((LN3 + math.log(4 / 3)) / 2))  # = ln 2
    torch.testing.assert_close(loss, t(LN2))
    torch.testing.assert_close(metrics["bc/accuracy"], t(0.5))
    # entropies: ln 3 and -(1/4 ln 1/4 + 3/4 ln 3/4) = ln 4 - 3/4 ln 3
    torch.testing.assert_close(metrics["bc/entropy"], t((LN3 + math.log(4) - 0.75 * LN3) / 2))
    loss.backward()
    # gradient softmax - onehot, over B = 2; zero (not NaN) at the masked actions
    expected = t([[1 / 3, 1 / 3 - 1, 0.0, 1 / 3], [1 / 4, 3 / 4 - 1, 0.0, 0.0]]) / 2
    torch.testing.assert_close(logits.grad, expected)


def test_bc_loss_shape_traps():
    with pytest.raises(ValueError, match=r"action: expected shape \[B\] = \[2\], found \[2, 1\]"):
        bc_loss(torch.zeros(2, 3), t([[0], [1]]))
    with pytest.raises(ValueError, match=r"logits: expected shape \[B, A\]"):
        bc_loss(torch.zeros(2, 3, 5), t([0, 1]))


# ------------------------------------------------------------------------------------- IQL


def test_iql_value_loss_is_asymmetric():
    v = t([0.0, 0.0, 1.0], requires_grad=True)
    q = t([2.0, -1.0, 1.0], requires_grad=True)
    # u = q - v = (2, -1, 0); tau = 0.8 weighs u >= 0 by 0.8 and u < 0 by 0.2: (0.8*4 + 0.2*1 + 0) / 3
    loss = iql_value_loss(v, q, expectile=0.8)
    torch.testing.assert_close(loss, t(3.4 / 3))
    loss.backward()
    # d/dv = -2 w u / B
    torch.testing.assert_close(v.grad, t([-2 * 0.8 * 2, -2 * 0.2 * -1, 0.0]) / 3)
    assert q.grad is None  # the target Q gets no gradient
    # tau = 0.5 is half the mean squared error
    torch.testing.assert_close(iql_value_loss(v, q, 0.5), t(0.5 * 5 / 3))


def test_iql_value_loss_checks():
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="expectile: expected a number in"):
            iql_value_loss(torch.zeros(2), torch.zeros(2), bad)
    with pytest.raises(ValueError, match=r"q_data_target: expected shape \[B\] = \[2\], found \[2, 1\]"):
        iql_value_loss(torch.zeros(2), torch.zeros(2, 1), 0.7)


def test_iql_q_loss_regresses_on_r_plus_discounted_v():
    q = t([[1.0, 5.0], [0.0, 2.0]], requires_grad=True)
    next_v = t([4.0, 100.0], requires_grad=True)
    args = (t([0, 1]), t([1.0, 0.0]), t([0.5, 0.0]), next_v)
    # targets: 1 + 0.5*4 = 3 and 0 + 0*100 = 0 (terminal); Q(s, a_data) = (1, 2); errors 2, -2
    loss = iql_q_loss(q, *args)
    torch.testing.assert_close(loss, t(4.0))  # mean squared error
    torch.testing.assert_close(iql_q_loss(q, *args, huber_delta=1.0), t(1.5))  # 1 * (2 - 0.5) each
    loss.backward()
    torch.testing.assert_close(q.grad, t([[-2.0, 0.0], [0.0, 2.0]]))  # 2 (Q - y) / B at the data actions
    assert next_v.grad is None
    with pytest.raises(ValueError, match=r"next_v: expected shape \[B\] = \[2\], found \[2, 1\]"):
        iql_q_loss(q, args[0], args[1], args[2], next_v[:, None])
    with pytest.raises(ValueError, match=r"discount: expected shape \[B\] = \[2\], found \[1\]"):
        iql_q_loss(q, args[0], args[1], t([0.5]), next_v)


def test_iql_policy_loss_weights_by_clipped_exponentiated_advantage():
    # log pi(a_data): ln(1/2) (row 0) and ln(3/4) (row 1); action 2 is absent in both rows.
    logits = t([[0.0, 0.0, -INF], [0.0, LN3, -INF]], requires_grad=True)
    action, advantage = t([0, 1]), t([0.0, LN2], requires_grad=True)
    # beta = 1: weights exp(0) = 1 and exp(ln 2) = 2
    loss = iql_policy_loss(logits, action, advantage, beta=1.0, max_weight=100.0)
    torch.testing.assert_close(loss, t((LN2 + 2 * math.log(4 / 3)) / 2))
    # clipped at 1.5
    torch.testing.assert_close(iql_policy_loss(logits, action, advantage, 1.0, max_weight=1.5), t((LN2 + 1.5 * math.log(4 / 3)) / 2))
    # beta = 0 is plain behaviour cloning
    torch.testing.assert_close(iql_policy_loss(logits, action, advantage, 0.0), bc_loss(logits, action)[0])
    # a huge advantage gives the clip, not inf or NaN
    huge = iql_policy_loss(logits, action, t([1e4, 1e4]), beta=10.0, max_weight=100.0)
    torch.testing.assert_close(huge, t(100 * (LN2 + math.log(4 / 3)) / 2))
    loss.backward()
    assert advantage.grad is None and torch.isfinite(logits.grad).all() and (logits.grad[:, 2] == 0).all()
    with pytest.raises(ValueError, match=r"advantage: expected shape \[B\] = \[2\], found \[2, 1\]"):
        iql_policy_loss(logits, action, advantage[:, None], 1.0)
    with pytest.raises(ValueError, match="beta: expected a number >= 0"):
        iql_policy_loss(logits, action, advantage, -1.0)


# ------------------------------------------------------------------------------------ BRAC


def test_brac_penalty_is_the_kl_of_the_boltzmann_policy_to_behaviour():
    # T = 2. Row 0: pi_Q = softmax((0, 0)/2) = (1/2, 1/2), pi_b = (1/4, 3/4), action 2 absent:
    #   KL = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3).
    # Row 1: pi_Q = softmax((0, 2 ln 3, 0)/2) = (1/5, 3/5, 1/5), pi_b = softmax(0, ln 2, 0) = (1/4, 1/2, 1/4):
    #   KL = 2 * 1/5 ln(4/5) + 3/5 ln(6/5).
    q = t([[0.0, 0.0, -INF], [0.0, 2 * LN3, 0.0]], requires_grad=True)
    behaviour = t([[0.0, LN3, -INF], [0.0, LN2, 0.0]], requires_grad=True)
    penalty, metrics = brac_penalty(q, behaviour, temperature=2.0)
    kl0 = 0.5 * math.log(4 / 3)
    kl1 = 0.4 * math.log(4 / 5) + 0.6 * math.log(6 / 5)
    torch.testing.assert_close(penalty, t((kl0 + kl1) / 2))
    torch.testing.assert_close(metrics["brac/kl"], t((kl0 + kl1) / 2))
    # argmax: row 0 Q picks 0 (tie), behaviour 1; row 1 both pick 1
    torch.testing.assert_close(metrics["brac/agreement"], t(0.5))
    penalty.backward()
    assert torch.isfinite(q.grad).all() and q.grad[0, 2] == 0 and behaviour.grad is None


def test_brac_penalty_zero_when_policies_agree_and_checks():
    behaviour = t([[1.0, -2.0, -INF], [0.5, 0.0, 3.0]])
    q = (3.0 * behaviour).requires_grad_()  # softmax(q / 3) = softmax(behaviour)
    penalty, _ = brac_penalty(q, behaviour, temperature=3.0)
    torch.testing.assert_close(penalty, t(0.0))
    penalty.backward()
    torch.testing.assert_close(q.grad, torch.zeros_like(q))  # a minimum, and no NaN at the -inf entry
    with pytest.raises(ValueError, match=r"behaviour_logits: expected shape \[B, A\] = \[2, 3\], found \[2, 1\]"):
        brac_penalty(q, behaviour[:, :1], 1.0)
    with pytest.raises(ValueError, match="temperature: expected a positive number"):
        brac_penalty(q, behaviour, 0.0)


# ----------------------------------------------------------------- Monte-Carlo return-to-go

GAMMA = 0.9


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("mc") / "data")


@pytest.fixture(scope="module")
def store(data):
    return ReplayStore(data.path, data.games)


def mc_at(sampler, data, index, step):
    return float(sampler.batch_at(np.array([data.row_of(index, step)])).mc_return[0])


def test_mc_return_of_the_fixture_episodes_by_hand(store, data):
    s = Sampler(store, 8, n_step=3, gamma=GAMMA, reward_clip=1.0)
    # Episode 0 (terminal), clipped rewards 0 1 0 -1 0 1, backwards G_t = r_t + 0.9 G_{t+1}:
    # G5 = 1, G4 = 0.9, G3 = -0.19, G2 = -0.171, G1 = 0.8461, G0 = 0.76149 (exact: terminal).
    for step, g in enumerate([0.76149, 0.8461, -0.171, -0.19, 0.9, 1.0]):
        assert mc_at(s, data, 0, step) == pytest.approx(g, abs=1e-6)
    # Episode 1 (truncated), rewards 5 -3 clipped to 1 -1: G1 = -1, G0 = 1 - 0.9 = 0.1 (sum up to the cut).
    assert mc_at(s, data, 1, 0) == pytest.approx(0.1, abs=1e-6) and mc_at(s, data, 1, 1) == pytest.approx(-1.0)
    # Episode 3 (terminal), clipped 1 0 0 1 0: G0 = 1 + 0.9^3 = 1.729; episode 4, one step of 7 -> 1.
    assert mc_at(s, data, 3, 0) == pytest.approx(1.729, abs=1e-6) and mc_at(s, data, 3, 4) == 0.0
    assert mc_at(s, data, 4, 0) == 1.0
    # Without clipping (reward_clip 0): episode 1 gives 5 - 0.9 * 3 = 2.3; episode 0 from step 3: -1 + 0.81 * 2 = 0.62.
    raw = Sampler(store, 8, n_step=3, gamma=GAMMA, reward_clip=0.0)
    assert mc_at(raw, data, 1, 0) == pytest.approx(2.3, abs=1e-6) and mc_at(raw, data, 0, 3) == pytest.approx(0.62, abs=1e-6)


def reference_mc(data, gamma, clip):
    """Plain-Python return-to-go of every (episode, step), from the fixture's episode list."""
    out = {}
    for i, ep in enumerate(data.episodes):
        g = 0.0
        for step in reversed(range(len(ep.rewards))):
            g = max(-clip, min(clip, ep.rewards[step])) + gamma * g
            out[i, step] = g
    return out


def test_sampled_batches_carry_the_mc_return_of_their_start_rows(store, data):
    s = Sampler(store, 8, n_step=2, gamma=GAMMA, reward_clip=1.0, seed=1)
    ref = reference_mc(data, GAMMA, 1.0)
    for _ in range(4):
        rows = s.sample_rows()
        batch = s.batch_at(rows)
        assert batch.mc_return.dtype == np.float32 and batch.mc_return.shape == (8,)
        expected = [ref[int(data.episode[r]), int(data.step[r])] for r in rows]
        np.testing.assert_allclose(batch.mc_return, expected, atol=1e-6)
    tb = s.sample().to_torch()
    assert tb.mc_return.dtype == torch.float32 and tb.mc_return.shape == (8,)


def test_batches_without_mc_return_still_work():
    b = Batch(
        obs=np.zeros((2, 4, 3, 3), np.uint8), action=np.zeros(2, np.int64), reward=np.zeros(2, np.float32),
        discount=np.ones(2, np.float32), next_obs=np.zeros((2, 4, 3, 3), np.uint8), game=np.zeros(2, np.int64),
    )
    assert b.mc_return is None and b.to_torch().mc_return is None and len(b) == 2


def test_discounted_returns_to_go_matches_a_loop_per_episode():
    rng = np.random.default_rng(0)
    steps = np.array([0, 1, 5, 0, 40, 3, 17, 2])  # episode lengths in transitions (0: a lone last row)
    last = np.concatenate([np.arange(n + 1) == n for n in steps])
    reward = rng.uniform(-1, 1, last.size).astype(np.float32)  # the last rows' rewards must be ignored
    for gamma in (0.99, 1.0, 0.5):
        got = discounted_returns_to_go(reward, last, gamma)
        expected, row = np.zeros(last.size), 0
        for n in steps:
            g = 0.0
            for j in reversed(range(row, row + n)):
                g = float(reward[j]) + gamma * g
                expected[j] = g
            row += n + 1
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"the final row \(2\) must end an episode"):
        discounted_returns_to_go(np.zeros(3, np.float32), np.array([False, True, False]), 0.9)
    with pytest.raises(ValueError, match="expected two arrays of shape"):
        discounted_returns_to_go(np.zeros(3, np.float32), np.array([False, True]), 0.9)


def test_calibrated_q_learning_is_the_calql_variant():
    from types import SimpleNamespace

    from scaled_ql.config import load_config
    from scaled_ql.losses import CalQL, NetworkOutputs, make_algorithm
    from scaled_ql.losses.calql import calql_penalty

    q = torch.tensor([[1.0, 2.0, float("-inf")], [0.5, -1.0, 3.0]], requires_grad=True)
    features = torch.ones(2, 4)
    out = SimpleNamespace(q=q, logits=None, features=features)
    nxt = SimpleNamespace(q=torch.zeros(2, 3), logits=None, features=features)
    batch = SimpleNamespace(action=torch.tensor([0, 2]), reward=torch.zeros(2), discount=torch.zeros(2),
                            mc_return=torch.tensor([1.5, 0.0]))
    calql = make_algorithm(load_config(None, ["loss.cql_alpha=1.0", "loss.dr3_coef=0.0", "loss.calibrated=true"]))
    assert isinstance(calql, CalQL) and calql.name == "calql"
    _, metrics = calql(NetworkOutputs(out, nxt, nxt), batch)
    expected, _ = calql_penalty(q, batch.action, batch.mc_return)
    torch.testing.assert_close(metrics["loss/cql"], expected.detach())
    batch.mc_return = None
    with pytest.raises(ValueError, match="mc_return"):
        make_algorithm(load_config(None, ["loss.calibrated=true"]))(NetworkOutputs(out, nxt, nxt), batch)


def test_training_runs_with_calql(tmp_path, debug_dataset):
    from scaled_ql.train.trainer import pretrain
    from tests.conftest import debug_config

    result = pretrain(debug_config(tmp_path, f"data.path={debug_dataset}", "eval.episodes=0", "train.steps=6",
                                   "loss.calibrated=true", "loss.cql_alpha=1.0"), progress=False)
    assert result.step == 6
