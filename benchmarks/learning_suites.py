"""The learning benchmark's suites: what each fixes in advance (games, data, methods, seeds, probes,
the mixed-quality regime, the transfer experiment, the reference implementation), as data.

:mod:`benchmarks.learning_bench` turns a suite into jobs and runs them; the lab notes on why each
setting is what it is live in ``docs/results/<suite>/NOTES.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaled_ql.losses.algorithms import ALGORITHMS, Algorithm

@dataclass(frozen=True)
class Method:
    name: str
    label: str
    overrides: tuple[str, ...]

    @property
    def algorithm(self) -> type[Algorithm]:
        """The algorithm its overrides choose (``loss.algorithm``, q_learning when they do not say)."""
        return ALGORITHMS[algorithm_of(self.overrides)]

    @property
    def values(self) -> bool:
        """Whether it learns values (Q or V) to set beside its returns ("what it thinks it gets")."""
        return self.algorithm.learns_values


def algorithm_of(overrides: tuple[str, ...]) -> str:
    """The ``loss.algorithm`` that ``key=value`` overrides choose (the last one wins; q_learning)."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("loss.algorithm=")]
    return chosen[-1] if chosen else "q_learning"


def with_heads(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """``overrides`` and the ``model.*`` settings their algorithm needs (its heads), so a method is
    named by its loss settings alone."""
    return (*overrides, *ALGORITHMS[algorithm_of(overrides)].model_overrides())


@dataclass(frozen=True)
class Probe:
    """A run beyond the suite's fixed settings, to test what limits the results: one game alone
    (the single-game runs' per-game batch) with ``overrides`` on top. ``seeds[0]`` is the seed the
    setting was tried on, one the tables do not use; the further seeds (the tables' own) check it
    on seeds it was not chosen on. Reported in its own section, never mixed into the tables."""

    name: str
    label: str
    game: str
    method: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    group: str = ""
    """Probes of one group (the levers tried against one common base run) are reported together in
    one table of their own, the first of the group being the base."""


@dataclass(frozen=True)
class Transfer:
    """Scaled QL's fine-tuning protocol at CPU scale: a network pretrained on ``pretrain_games``
    (from the suite's main dataset) fine-tuned to each target, a held-out variant of a training
    game and a held-out game, from a small dataset of it, offline and online (each mode's
    overrides), against the same network trained from scratch on the same data and budget."""

    pretrain_games: tuple[str, ...]
    pretrain: tuple[str, ...]
    """Overrides of the pretraining run (its budget: long enough to read the screen)."""
    targets: tuple[tuple[str, str], ...]
    """(label, game or variant) pairs, e.g. ("held-out variant", "Breakout-m0d1")."""
    target_data: tuple[str, ...]
    """``prep.*`` overrides of each target's small dataset (its scripted behaviour, size, seed)."""
    modes: tuple[tuple[str, str, tuple[str, ...]], ...]
    """(slug, label, overrides): how the fine-tuning runs, e.g. offline, online Cal-QL, online CQL."""
    finetune: tuple[str, ...]
    """Overrides of every fine-tuning and scratch run (budget, evaluation schedule)."""
    method: str = "cql_dr3"
    seeds: tuple[int, ...] = (1, 2, 3)


def slug(game: str) -> str:
    return game.replace("-", "_")


@dataclass(frozen=True)
class Suite:
    """Everything a benchmark run fixes in advance. Overrides are ``key=value`` config strings
    applied on top of ``base`` (a YAML file in ``configs/``)."""

    name: str
    base: str
    games: tuple[str, ...]
    common: tuple[str, ...]
    """Overrides of every run and dataset (model, training budget, evaluation, preprocessing)."""
    data: tuple[str, ...]
    """Overrides of the main dataset (``prep.*``)."""
    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    single_game: str
    single_methods: tuple[str, ...]
    finetune_game: str
    finetune_data: tuple[str, ...]
    pretrain_method: str
    finetune: tuple[str, ...]
    """Overrides of the fine-tuning and from-scratch runs (budget, batch)."""
    behaviour_episodes: int = 10
    notes: str = ""
    probes: tuple[Probe, ...] = ()
    """Run after every seed of the tables; each probe's first seed is the one it was tried on."""
    table_budgets: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    """Further budgets of the main tables, each (slug, label, overrides on top of ``common``): every
    method's multi-game runs and the single-game runs again, jobs ``multi-<slug>/<method>/seed<n>``
    and ``single-<slug>/<game>/<method>/seed<n>``. The report shows the last budget's tables first."""
    mixed_data: tuple[str, ...] = ()
    """Overrides of the mixed-quality dataset (``prep.policy=mixed``: a share of the environments
    play the scripted controller, the rest a poor one), on the suite's games; empty: no mixed
    regime."""
    mixed_methods: tuple[str, ...] = ()
    """The methods trained on the mixed-quality dataset (multi-game, the tables' seeds)."""
    mixed_common: tuple[str, ...] = ()
    """Overrides of the mixed-regime runs on top of ``common`` (their budget)."""
    mixed_variants: tuple[tuple[str, str, str, tuple[str, ...], tuple[int, ...]], ...] = ()
    """Settings tried on the mixed regime beyond ``mixed_common``, each (slug, label, method,
    overrides, seeds): the first seed is the one it was tried on (one the tables do not use), the
    others check it; jobs ``mixed-<slug>/<method>/seed<n>``, in rows of their own."""
    transfer: Transfer | None = None
    """The pretraining-helps-a-new-game experiment; None: not part of the suite."""
    peer: tuple[str, ...] = ()
    """Overrides of the reference-implementation comparison (d3rlpy's DiscreteCQL against ours on
    ``single_game``, same data, network, batch, optimizer and updates); empty: no peer rows."""
    peer_seeds: tuple[int, ...] = ()
    peer_variants: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    """Further peer comparisons, each (slug, label, overrides on top of ``peer`` for both
    implementations), e.g. at another learning rate; jobs ``peer-<slug>/<impl>/seed<n>``."""


_METHODS = (
    Method("bc", "BC", ("loss.algorithm=bc",)),
    Method("dqn", "DQN (no regularizer)", ("loss.cql_alpha=0", "loss.dr3_coef=0")),
    Method("cql", "CQL", ("loss.cql_alpha=1.0", "loss.dr3_coef=0")),
    Method("cql_dr3", "CQL + DR3", ("loss.cql_alpha=1.0", "loss.dr3_coef=0.03")),
    Method("iql", "IQL", ("loss.algorithm=iql", "loss.dr3_coef=0", "loss.iql_expectile=0.7", "loss.iql_beta=3.0")),
)

METHODS_BY_NAME = {m.name: m for m in _METHODS}
"""Every method the suites may name, by name (a suite's own ``methods`` may be fewer)."""

PEER_METHOD = METHODS_BY_NAME["cql"]
"""The method of the reference-implementation comparison: CQL (d3rlpy has no DR3)."""

# The levers for learning faster per CPU hour: each changes one setting of CQL + DR3 on Breakout
# alone at 20,000 updates (evaluated every 4,000), against the same budget and schedule with
# nothing changed. Why each was tried and what it did: docs/results/cpu-small/NOTES.md.
_LEVER_BUDGET = ("train.steps=20000", "train.eval_every=4000", "train.checkpoint_every=4000")
LEVER_PROBES = tuple(
    Probe(f"Breakout-cql_dr3-20k{suffix}", f"CQL + DR3, Breakout alone, 20k updates{label}", "Breakout", "cql_dr3",
          (*_LEVER_BUDGET, *overrides), seeds, group="levers")
    for suffix, label, overrides, seeds in (
        ("", "", (), (0,)),
        ("-shift", ", random-shift augmentation", ("train.augment=shift",), (0,)),
        ("-lr3e-4", ", learning rate 3e-4", ("train.lr=3e-4",), (0, 1, 2, 3)),  # chosen on seed 0, checked on 1-3
        ("-target250", ", target update every 250", ("train.target_update_period=250",), (0,)),
        ("-nstep10", ", 10-step returns", ("data.n_step=10",), (0,)),
        # Batch 64 at the base's wall time (the measured cost per update: NOTES.md).
        ("-batch64", ", batch 64 at equal wall time", ("train.batch_size=64", "train.steps=7200", "train.eval_every=1440",
                                                       "train.checkpoint_every=1440"), (0,)),
        ("-adameps1e-8", ", Adam epsilon 1e-8", ("train.adam_eps=1e-8",), (0,)),
        ("-lr3e-4-adameps1e-8", ", learning rate 3e-4 and Adam epsilon 1e-8", ("train.lr=3e-4", "train.adam_eps=1e-8"), (0,)),
    )
)

SUITES: dict[str, Suite] = {
    "cpu-small": Suite(
        name="cpu-small",
        base="learning_base.yaml",
        games=("Pong", "Breakout", "Freeway"),
        common=("train.batch_size=48", "train.steps=8000", "train.lr=1e-4", "train.target_update_period=1000",
                "train.eval_every=2000", "train.checkpoint_every=2000", "train.log_every=100", "train.threads=2",
                "eval.episodes=10", "eval.num_envs=10", "eval.max_episode_steps=2000",
                "data.n_step=3", "data.gamma=0.99", "model.backbone=nature", "model.value=scalar"),
        data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=50000", "prep.num_envs=8",
              "prep.max_episode_steps=2000"),
        methods=_METHODS,
        seeds=(1, 2, 3),
        single_game="Breakout",
        single_methods=("cql_dr3", "bc"),
        finetune_game="Pong",
        finetune_data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=10000", "prep.num_envs=8",
                       "prep.max_episode_steps=2000", "seed=100"),
        pretrain_method="cql_dr3",
        finetune=("train.batch_size=16", "train.steps=3000", "train.eval_every=1000", "train.checkpoint_every=1000"),
        notes="Settings fixed before the first run (no tuning): the tiny demo's network and optimizer, CQL's "
              "alpha = 1.0, DR3 0.03 (Dopamine's offline DR3 agent), IQL's expectile 0.7 and beta 3 (the IQL "
              "paper's locomotion values).",
        # The tables again at the budget where Breakout alone reads the screen: the levers' learning rate
        # (chosen on seed 0, checked on seeds 1-3) and their 20,000 updates (NOTES.md).
        table_budgets=(("read", "20,000 updates at learning rate 3e-4", ("train.lr=3e-4", *_LEVER_BUDGET)),),
        # The mixed-quality regime: a quarter of the environments (2 of 8) scripted and three quarters
        # poor, both with 10% random actions; BC against CQL + DR3 at the levers' budget and learning rate.
        mixed_data=("prep.policy=mixed", "prep.epsilon=0.1", "prep.good_fraction=0.25", "prep.steps_per_game=50000",
                    "prep.num_envs=8", "prep.max_episode_steps=2000"),
        mixed_methods=("bc", "cql_dr3"),
        mixed_common=("train.lr=3e-4", *_LEVER_BUDGET),
        # CQL's weight, tried on seed 0 after CQL + DR3 cloned the mixture on seeds 1-3 (NOTES.md).
        # Then alpha 0.01 with a cosine learning rate (3e-4 down to 3e-5), after alpha 0.01 alone walked
        # Freeway up for 12,000 updates and lost it by 20,000; chosen on seed 0 (the only try ahead of
        # BC on a game at the end), checked on seeds 1-3.
        mixed_variants=(("alpha0.1", "CQL alpha 0.1", "cql_dr3", ("loss.cql_alpha=0.1",), (0,)),
                        ("alpha0.01", "CQL alpha 0.01", "cql_dr3", ("loss.cql_alpha=0.01",), (0,)),
                        ("alpha0.01-cosine", "CQL alpha 0.01, cosine learning rate to a tenth", "cql_dr3",
                         ("loss.cql_alpha=0.01", "train.lr_schedule=cosine"), (0, 1, 2, 3))),  # chosen on seed 0
        # The transfer experiment (Scaled QL's protocol at CPU scale): pretrain on Breakout + Freeway, then
        # fine-tune to a held-out variant (the small paddle) and a held-out game, offline, online with
        # Cal-QL and online with plain CQL, against scratch.
        transfer=Transfer(
            pretrain_games=("Breakout", "Freeway"),
            pretrain=("train.steps=40000", "train.eval_every=8000", "train.checkpoint_every=8000"),
            targets=(("held-out variant", "Breakout-m0d1"), ("held-out game", "Pong")),
            target_data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=10000", "prep.num_envs=8",
                         "prep.max_episode_steps=2000", "seed=100"),
            modes=(("offline", "offline", ()),
                   ("online-calql", "online, Cal-QL", ("online.enabled=true", "loss.calibrated=true")),
                   ("online-cql", "online, CQL", ("online.enabled=true",))),
            finetune=("train.steps=5000", "train.eval_every=1000", "train.checkpoint_every=1000"),
        ),
        peer=("data.n_step=1", *_LEVER_BUDGET),
        peer_seeds=(1, 2, 3),
        # The comparison again at the learning rate the levers chose, where both should read the screen.
        peer_variants=(("lr3e-4", "learning rate 3e-4", ("train.lr=3e-4",)),),
        probes=tuple(Probe(f"Breakout-{m}-5x", f"{label}, Breakout alone, 5x the updates", "Breakout", m,
                           ("train.steps=40000", "train.eval_every=8000", "train.checkpoint_every=8000"), (0, 1, 2, 3))
                     for m, label in (("bc", "BC"), ("cql_dr3", "CQL + DR3"))) + LEVER_PROBES,
    ),
    "smoke": Suite(  # the test suite's: every job kind on a budget of seconds
        name="smoke",
        base="learning_base.yaml",
        games=("Breakout", "Freeway"),
        common=("train.batch_size=4", "train.steps=4", "train.eval_every=2", "train.checkpoint_every=2",
                "train.log_every=1", "train.target_update_period=2", "train.threads=1", "eval.episodes=2",
                "eval.num_envs=2", "eval.max_episode_steps=20", "eval.bootstrap_samples=50", "model.feature_dim=16"),
        data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=120", "prep.num_envs=2",
              "prep.max_episode_steps=40"),
        methods=(_METHODS[0], _METHODS[3]),
        seeds=(1, 2),
        single_game="Breakout",
        single_methods=("cql_dr3",),
        finetune_game="Freeway",
        finetune_data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=60", "prep.num_envs=2",
                       "prep.max_episode_steps=40", "seed=100"),
        pretrain_method="cql_dr3",
        finetune=("train.batch_size=2", "train.steps=4"),
        behaviour_episodes=2,
        table_budgets=(("long", "2x the updates", ("train.steps=8",)),),
        probes=(Probe("Breakout-cql_dr3-2x", "CQL + DR3, Breakout alone, 2x the updates", "Breakout", "cql_dr3", ("train.steps=8",), (0, 1)),),
        peer=("data.n_step=1",),
        peer_seeds=(1,),
        peer_variants=(("lr3e-4", "learning rate 3e-4", ("train.lr=3e-4",)),),
        mixed_data=("prep.policy=mixed", "prep.epsilon=0.1", "prep.good_fraction=0.5", "prep.steps_per_game=120",
                    "prep.num_envs=2", "prep.max_episode_steps=40"),
        mixed_methods=("bc", "cql_dr3"),
        mixed_variants=(("alpha0.1", "CQL alpha 0.1", "cql_dr3", ("loss.cql_alpha=0.1",), (0, 1)),),
        transfer=Transfer(
            pretrain_games=("Breakout",), pretrain=("train.steps=4",),
            targets=(("held-out variant", "Breakout-m0d1"), ("held-out game", "Freeway")),
            target_data=("prep.policy=scripted", "prep.epsilon=0.5", "prep.steps_per_game=60", "prep.num_envs=2",
                         "prep.max_episode_steps=40", "seed=100"),
            modes=(("offline", "offline", ()), ("online-calql", "online, Cal-QL", ("online.enabled=true", "loss.calibrated=true"))),
            finetune=("train.steps=4", "train.eval_every=2"), seeds=(1, 2)),
    ),
}
