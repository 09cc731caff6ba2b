"""The learning algorithms of ``loss.algorithm``: one object per algorithm, built once from the config.

In the spirit of d3rlpy's config then ``create()``: :func:`make_algorithm` checks that the config
fits the algorithm (an error names the key, what the algorithm needs and what was found), binds
the value representation's parameters (its support, HL-Gauss's sigma) and returns an object that
the update step calls as ``algorithm(outputs, batch) -> (loss, detached metrics)``. Each class
declares what it needs of the network: the forward passes (:class:`Passes`: the update step runs
only those), the heads (:class:`Heads`) and whether it learns values at all.

The three families the offline-RL literature answers distribution shift with are all here:
pessimism (:class:`QLearning` with CQL, and its named variant :class:`CalQL`), a policy
constraint (:class:`BRAC`) and in-sample learning (:class:`IQL`), with behaviour cloning
(:class:`BehaviourCloning`) as the reference every offline agent must beat. :data:`ALGORITHMS`
is the one registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from scaled_ql.config import ConfigError, ExperimentConfig, LossConfig
from scaled_ql.losses.bc import bc_loss
from scaled_ql.losses.brac import brac_penalty
from scaled_ql.losses.calql import calql_term
from scaled_ql.losses.dr3 import dr3_penalty
from scaled_ql.losses.iql import iql_policy_loss, iql_q_loss, iql_value_loss
from scaled_ql.losses.td import gather_actions
from scaled_ql.losses.total import ConservativePenalty, TransitionBatch, ValueOutput, cql_term, total_loss
from scaled_ql.losses.values import VALUE_KINDS


@dataclass(frozen=True)
class Passes:
    """The forward passes an algorithm reads, beside the online network on s (always run)."""

    next_online: bool  # the online network on s' (gradient flows)
    next_target: bool  # the target network on s', no gradient
    target: bool  # the target network on s, no gradient


@dataclass(frozen=True)
class Heads:
    """What an algorithm needs of the network's heads (``model.*`` keys)."""

    policy: bool = False  # model.policy_head
    state_value: bool = False  # model.state_value_head
    act_with_policy: bool = False  # model.act_with=policy
    scalar_value: bool = False  # model.value=scalar


@dataclass(frozen=True)
class NetworkOutputs:
    """The forward passes of one update (None where the algorithm did not ask for it)."""

    out: ValueOutput  # online network on s (gradient flows)
    next_online: ValueOutput | None = None  # online network on s' (gradient flows)
    next_target: ValueOutput | None = None  # target network on s', no gradient
    target: ValueOutput | None = None  # target network on s, no gradient


class Algorithm:
    """A learning algorithm, bound to its loss settings and the network's value representation."""

    name: ClassVar[str]
    passes: ClassVar[Passes]
    heads: ClassVar[Heads] = Heads()
    learns_values: ClassVar[bool] = True
    """Whether it learns values (Q or V) to set beside the returns it gets (behaviour cloning does not)."""
    calibrated_variant: ClassVar[type[Algorithm] | None] = None
    """The class ``loss.calibrated=true`` selects (Cal-QL), or None when the algorithm has none."""

    def __init__(self, loss: LossConfig, *, value: str = "scalar", support: Tensor | None = None,
                 hl_gauss_sigma: float = 0.75) -> None:
        self.loss, self.value, self.support, self.hl_gauss_sigma = loss, value, support, hl_gauss_sigma

    def __call__(self, outputs: NetworkOutputs, batch: TransitionBatch) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    @property
    def next_online_grad(self) -> bool:
        """Whether the loss sends gradient through the online network on s' (``passes.next_online``).
        When it does not, the update step runs s' without gradient and backpropagates through s alone."""
        return self.passes.next_online

    @classmethod
    def model_overrides(cls) -> tuple[str, ...]:
        """The ``model.*`` settings this algorithm needs, as ``key=value`` overrides."""
        h = cls.heads
        return tuple(text for on, text in ((h.policy, "model.policy_head=true"), (h.state_value, "model.state_value_head=true"),
                                           (h.act_with_policy, "model.act_with=policy"), (h.scalar_value, "model.value=scalar"))
                     if on)

    @classmethod
    def check(cls, cfg: ExperimentConfig) -> None:
        """Stop, naming the key, when ``cfg`` does not fit this algorithm (its heads, its value head)."""
        model, h, name = cfg.model, cls.heads, cfg.loss.algorithm
        needs = ((h.scalar_value, "model.value", "scalar", model.value, "it regresses or classifies with a scalar head"),
                 (h.policy, "model.policy_head", True, model.policy_head, "it trains a policy head"),
                 (h.state_value, "model.state_value_head", True, model.state_value_head, "it trains a state-value head V(s)"),
                 (h.act_with_policy, "model.act_with", "policy", model.act_with, "it acts with its policy head"))
        for needed, key, expected, found, why in needs:
            if needed and found != expected:
                raise ConfigError(f"config key '{key}': expected {expected!r} for loss.algorithm={name} ({why}), found {found!r}; "
                                  f"loss.algorithm={name} needs {' '.join(cls.model_overrides())}")


class QLearning(Algorithm):
    """TD + cql_alpha * CQL + dr3_coef * DR3 (:func:`scaled_ql.losses.total.total_loss`): DQN when
    both weights are 0, CQL, CQL + DR3 (Scaled QL)."""

    name = "q_learning"
    passes = Passes(next_online=True, next_target=True, target=False)
    conservative: ConservativePenalty = staticmethod(cql_term)

    def __call__(self, outputs: NetworkOutputs, batch: TransitionBatch) -> tuple[Tensor, dict[str, Tensor]]:
        return total_loss(outputs.out, outputs.next_online, outputs.next_target, batch, self.loss, value=self.value,
                          support=self.support, hl_gauss_sigma=self.hl_gauss_sigma, conservative=self.conservative)

    @property
    def next_online_grad(self) -> bool:
        # Only DR3 differentiates through phi(s'); the double-DQN argmax on s' is taken without gradient.
        return self.loss.dr3_coef > 0


class CalQL(QLearning):
    """Cal-QL (Nakamoto et al., 2023): Q-learning whose push-down term uses max(Q, V_ref), V_ref the
    data's Monte-Carlo return-to-go (``scaled_ql.losses.calql``); ``loss.calibrated=true``."""

    name = "calql"
    conservative = staticmethod(calql_term)


QLearning.calibrated_variant = CalQL


class BehaviourCloning(Algorithm):
    """Behaviour cloning with the per-game head as the classifier: its outputs are logits, not values."""

    name = "bc"
    passes = Passes(next_online=False, next_target=False, target=False)
    heads = Heads(scalar_value=True)
    learns_values = False

    def __call__(self, outputs: NetworkOutputs, batch: TransitionBatch) -> tuple[Tensor, dict[str, Tensor]]:
        loss, metrics = bc_loss(outputs.out.q, batch.action)
        return loss, {"loss/total": loss.detach(), "loss/bc": loss.detach(), **metrics}


class BRAC(Algorithm):
    """The Q-learning loss (CQL's, or Cal-QL's with ``loss.calibrated``) + brac_alpha *
    KL(softmax(Q / T) || pi_b) + the BC loss of the pi_b head."""

    name = "brac"
    passes = QLearning.passes
    heads = Heads(policy=True)

    def __init__(self, loss: LossConfig, **value: Any) -> None:
        super().__init__(loss, **value)
        self.q_learning = (CalQL if loss.calibrated else QLearning)(loss, **value)

    def __call__(self, outputs: NetworkOutputs, batch: TransitionBatch) -> tuple[Tensor, dict[str, Tensor]]:
        out, cfg = outputs.out, self.loss
        if out.policy_logits is None:
            raise ValueError("loss.algorithm=brac: the network has no policy head (model.policy_head is false)")
        loss, metrics = self.q_learning(outputs, batch)
        with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.brac_alpha > 0):
            kl, kl_metrics = brac_penalty(out.q, out.policy_logits, cfg.brac_temperature)
        bc, bc_metrics = bc_loss(out.policy_logits, batch.action)
        if cfg.brac_alpha > 0:
            loss = loss + cfg.brac_alpha * kl
        loss = loss + bc
        metrics |= {"loss/total": loss.detach(), "loss/brac": kl.detach(), "loss/bc": bc.detach(), **kl_metrics, **bc_metrics}
        return loss, metrics


BRAC.calibrated_variant = BRAC  # calibrated: its Q-learning part is CalQL (see __init__)


class IQL(Algorithm):
    """L_V + L_Q + L_pi of :mod:`scaled_ql.losses.iql` (+ dr3_coef * DR3), one shared backbone.

    Q_target(s, a_data) comes from the target network (the reference code's Polyak-averaged
    critic; here the hard-synced target), V(s') from the online network without gradient."""

    name = "iql"
    passes = Passes(next_online=True, next_target=False, target=True)
    heads = Heads(policy=True, state_value=True, act_with_policy=True, scalar_value=True)

    def __call__(self, outputs: NetworkOutputs, batch: TransitionBatch) -> tuple[Tensor, dict[str, Tensor]]:
        out, nxt, cfg = outputs.out, outputs.next_online, self.loss
        if out.v is None or out.policy_logits is None or nxt is None or nxt.v is None or outputs.target is None:
            raise ValueError("loss.algorithm=iql: expected V and policy heads (model.state_value_head, model.policy_head) "
                             "and the online pass over s' and the target pass over s")
        q_data_target = gather_actions(outputs.target.q, batch.action).detach().float()
        value = iql_value_loss(out.v, q_data_target, cfg.iql_expectile)
        td = iql_q_loss(out.q, batch.action, batch.reward, batch.discount, nxt.v, cfg.huber_delta)
        advantage = q_data_target - out.v.detach().float()
        policy = iql_policy_loss(out.policy_logits, batch.action, advantage, cfg.iql_beta, cfg.iql_max_weight)
        loss = value + td + policy
        with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.dr3_coef > 0):
            dr3 = dr3_penalty(out.features, nxt.features)
        if cfg.dr3_coef > 0:
            loss = loss + cfg.dr3_coef * dr3
        with torch.no_grad():
            metrics = {
                "loss/total": loss.detach(), "loss/td": td.detach(), "loss/value": value.detach(),
                "loss/policy": policy.detach(), "loss/dr3": dr3.detach(),
                "q/data": gather_actions(out.q, batch.action).float().mean(),
                "q/v": out.v.float().mean(),
                "q/target": (batch.reward.float() + batch.discount.float() * nxt.v.float()).mean(),
                "iql/advantage": advantage.mean(),
                "iql/weight": torch.exp(cfg.iql_beta * advantage).clamp(max=cfg.iql_max_weight).mean(),
                "bc/accuracy": (out.policy_logits.argmax(-1) == batch.action).float().mean(),
            }
        return loss, metrics


ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (QLearning, BehaviourCloning, IQL, BRAC)}
"""``loss.algorithm`` -> its class: the one registry of what each algorithm is and needs."""


def algorithm_class(loss: LossConfig) -> type[Algorithm]:
    """The class ``loss`` names (``loss.algorithm``, and its Cal-QL variant with ``loss.calibrated``)."""
    if loss.algorithm not in ALGORITHMS:
        raise ConfigError(f"config key 'loss.algorithm': expected one of {', '.join(ALGORITHMS)}, found {loss.algorithm!r}")
    cls = ALGORITHMS[loss.algorithm]
    if loss.calibrated:
        if cls.calibrated_variant is None:
            raise ConfigError(f"config key 'loss.calibrated': expected false for loss.algorithm={loss.algorithm} (Cal-QL "
                              f"calibrates the conservative penalty of q_learning and brac, which {loss.algorithm} has not), found True")
        cls = cls.calibrated_variant
    return cls


def check_algorithm(cfg: ExperimentConfig) -> type[Algorithm]:
    """Stop, naming the key, when ``cfg`` does not fit its algorithm; return the algorithm's class.
    Every entry point calls this (or :func:`make_algorithm`) before any data or model is built."""
    if cfg.model.value not in VALUE_KINDS:
        raise ConfigError(f"config key 'model.value': expected one of {', '.join(sorted(VALUE_KINDS))}, found {cfg.model.value!r}")
    cls = algorithm_class(cfg.loss)
    cls.check(cfg)
    return cls


def make_algorithm(cfg: ExperimentConfig, support: Tensor | None = None) -> Algorithm:
    """The algorithm of ``cfg``, checked against the config and bound to the value representation's
    parameters: HL-Gauss's sigma and the support, ``support`` if given (the network's own buffer,
    on its device and in its dtype) or else computed from ``model.*`` on the CPU."""
    cls = check_algorithm(cfg)
    model = cfg.model
    if support is None:
        support = VALUE_KINDS[model.value].support(model.v_min, model.v_max, model.num_atoms)
    return cls(cfg.loss, value=model.value, support=support, hl_gauss_sigma=model.hl_gauss_sigma)
