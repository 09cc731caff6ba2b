"""The sections of an experiment config (``env``, ``prep``, ``data``, ``model``, ``loss``, ...): typed
dataclasses, each checking its own keys when built; an error names the key, what was expected and
what was found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass(kw_only=True, slots=True)
class EnvConfig:
    """The Atari protocol (Machado et al., 2018; DQN-era papers). Recorded with every model."""

    frame_size: int = 84
    """Frames are resized to ``frame_size x frame_size`` grayscale."""
    frame_stack: int = 4
    """Number of consecutive frames stacked into one observation."""
    frameskip: int = 4
    """Each agent action is repeated this many emulator frames; the last two are max-pooled."""
    sticky_action_prob: float = 0.25
    """ALE v5 sticky actions: probability of repeating the previous action."""
    max_episode_frames: int = 108_000
    """Episode cap in emulator frames (27,000 agent steps at frameskip 4)."""
    full_action_space: bool = False
    """Use all 18 actions for every game instead of each game's minimal set."""

    def __post_init__(self) -> None:
        _check(self.frame_size > 0, "env.frame_size", "a positive integer", self.frame_size)
        _check(self.frame_stack >= 1, "env.frame_stack", "at least 1", self.frame_stack)
        _check(self.frameskip >= 1, "env.frameskip", "at least 1", self.frameskip)
        _check(0.0 <= self.sticky_action_prob < 1.0, "env.sticky_action_prob", "a probability in [0, 1)", self.sticky_action_prob)


@dataclass(kw_only=True, slots=True)
class PrepConfig:
    """How ``scaled-ql prep`` makes a dataset by playing the games in ALE."""

    steps_per_game: int = 5_000
    """Agent steps recorded per game."""
    policy: str = "random"
    """Behaviour policy: ``random`` (uniform over the game's actions), ``epsilon_greedy``
    (greedy in the Q-network of ``checkpoint`` with probability 1 - epsilon) or ``scripted``
    (a controller reading object positions from the Atari RAM, ``data_prep.scripted``, with
    probability 1 - epsilon; Pong, Breakout, Freeway) or ``mixed`` (the mixed-quality regime: a
    share ``good_fraction`` of the environments play the scripted controller, the others a poor
    controller that reads the RAM and does the wrong thing; both with ``epsilon`` random actions)."""
    good_fraction: float = 0.25
    """``mixed``: the share of environments (so of agent steps) played by the scripted controller;
    times ``num_envs`` must be a whole number."""
    epsilon: float = 0.1
    """Share of uniformly random actions of the ``epsilon_greedy`` and ``scripted`` policies."""
    checkpoint: str = ""
    """Checkpoint folder (a ``model/`` folder or a run's checkpoint) for ``epsilon_greedy``."""
    num_envs: int = 4
    """Parallel ALE environments per game (ale_py's C++ vector environment)."""
    max_episode_steps: int = 0
    """If > 0, truncate episodes after this many agent steps (on top of the frame cap);
    keeps small demo datasets from being one long episode."""
    shard_rows: int = 2_000
    """Rows per Arrow record batch when writing."""

    def __post_init__(self) -> None:
        _check(self.policy in ("random", "epsilon_greedy", "scripted", "mixed"), "prep.policy",
               "'random', 'epsilon_greedy', 'scripted' or 'mixed'", self.policy)
        good = self.good_fraction * self.num_envs
        _check(self.policy != "mixed" or (0.0 <= self.good_fraction <= 1.0 and abs(good - round(good)) < 1e-9), "prep.good_fraction",
               f"a fraction in [0, 1] that times prep.num_envs={self.num_envs} is a whole number of environments",
               self.good_fraction)
        _check(self.steps_per_game > 0, "prep.steps_per_game", "a positive integer", self.steps_per_game)
        _check(0.0 <= self.epsilon <= 1.0, "prep.epsilon", "a probability in [0, 1]", self.epsilon)
        _check(self.num_envs >= 1, "prep.num_envs", "at least 1", self.num_envs)


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Where the offline data lives and how transitions are formed from it at sample time."""

    path: str = "data/tiny"
    """The data, chosen by what it is: a dataset folder written by ``scaled-ql prep`` (Arrow,
    memory-mapped), or Parquet shards streamed (``scaled-ql data export-parquet``): a local or
    shared folder, a Hub dataset repo id (``user/name`` or ``user/name@revision``) or an fsspec
    URL (``s3://...``, ``hf://datasets/...``)."""
    n_step: int = 3
    """n-step returns: sum of the next n clipped rewards, discounted, then bootstrap."""
    gamma: float = 0.99
    """Discount factor."""
    reward_clip: float = 1.0
    """Rewards are clipped to [-reward_clip, reward_clip] for training (DQN convention); 0 disables."""
    ignore_extra_games: bool = False
    """Allow the dataset to hold games that are not in ``games`` (they are left out), e.g. to
    fine-tune on one game of a multi-game dataset."""
    holdout_fraction: float = 0.0
    """Fraction of episodes (chosen by a hash of their id) kept out of training; the TD error on
    them is logged as ``holdout/*`` so overfitting a small dataset shows."""
    stream_buffer_rows: int = 10_000
    """Streaming (``path`` a Parquet folder, Hub dataset repo id or URL): rows of whole episodes
    per game in the shuffle buffer; transitions are shuffled within it. RAM per process is about
    ``len(games) * (stream_prefetch_blocks + 2) * stream_buffer_rows * 7 KB``."""
    stream_prefetch_blocks: int = 1
    """Streaming: buffers per game read and decoded ahead in a background thread (0: none)."""
    skip_bad_shards: bool = False
    """Streaming: skip a shard that is missing, truncated or fails its checksum (logged, and
    listed in every checkpoint's sampler state) instead of stopping with its name."""
    read_retries: int = 4
    """Streaming: retries of a failed remote shard read (Hub, URL), with exponential backoff."""
    retry_wait_s: float = 1.0
    """Streaming: the first wait between retries; each next wait doubles."""

    def __post_init__(self) -> None:
        _check(0.0 <= self.holdout_fraction < 1.0, "data.holdout_fraction", "a fraction in [0, 1)", self.holdout_fraction)
        _check(self.stream_buffer_rows >= 1, "data.stream_buffer_rows", "at least 1", self.stream_buffer_rows)
        _check(self.stream_prefetch_blocks >= 0, "data.stream_prefetch_blocks", "a non-negative integer", self.stream_prefetch_blocks)
        _check(self.read_retries >= 0, "data.read_retries", "a non-negative integer", self.read_retries)
        _check(self.retry_wait_s >= 0.0, "data.retry_wait_s", "a non-negative number", self.retry_wait_s)
        _check(self.n_step >= 1, "data.n_step", "at least 1", self.n_step)
        _check(0.0 < self.gamma <= 1.0, "data.gamma", "a number in (0, 1]", self.gamma)
        _check(self.reward_clip >= 0.0, "data.reward_clip", "a non-negative number", self.reward_clip)


@dataclass(kw_only=True, slots=True)
class FinetuneConfig:
    """Starting from a pretrained checkpoint (``scaled-ql finetune``)."""

    init: str = ""
    """Checkpoint to start from: a run folder, checkpoint folder, model folder or Hub repo id.
    Empty: train from scratch. Its backbone is loaded; each game of ``games`` that it has a head
    for gets that head, other games a fresh one."""
    freeze_backbone: bool = False
    """Train only the heads."""
    backbone_lr_scale: float = 1.0
    """The backbone's learning rate is ``train.lr`` times this (heads use ``train.lr``)."""

    def __post_init__(self) -> None:
        _check(self.backbone_lr_scale >= 0.0, "finetune.backbone_lr_scale", "a non-negative number", self.backbone_lr_scale)


@dataclass(kw_only=True, slots=True)
class OnlineConfig:
    """Online fine-tuning: play the games while training, and mix online with offline data."""

    enabled: bool = False
    """Run an actor in ALE during training and draw part of every batch from its replay."""
    num_envs: int = 4
    """Parallel environments per game (ale_py's vector environment)."""
    env_steps_per_update: int = 1
    """Vector-environment steps (each ``num_envs`` transitions per game) before every update."""
    offline_fraction: float = 0.5
    """Share of every batch drawn from the offline data (exactly, per game)."""
    anneal_offline_to: float | None = None
    """If set, the offline share goes linearly to this value over ``train.steps``."""
    capacity_rows: int = 100_000
    """Rows of the online replay (whole episodes, oldest evicted first)."""
    epsilon_start: float = 0.1
    """Exploration rate at the first environment step."""
    epsilon_end: float = 0.01
    """Exploration rate after ``epsilon_decay_steps`` environment steps."""
    epsilon_decay_steps: int = 10_000
    """Environment steps (over all environments) of the linear epsilon decay."""
    max_episode_steps: int = 0
    """If > 0, cut online episodes after this many agent steps (the protocol's cap always applies)."""

    def __post_init__(self) -> None:
        _check(self.num_envs >= 1, "online.num_envs", "at least 1", self.num_envs)
        _check(self.env_steps_per_update >= 1, "online.env_steps_per_update", "at least 1", self.env_steps_per_update)
        _check(0.0 <= self.offline_fraction <= 1.0, "online.offline_fraction", "a fraction in [0, 1]", self.offline_fraction)
        _check(self.anneal_offline_to is None or 0.0 <= self.anneal_offline_to <= 1.0, "online.anneal_offline_to",
               "null or a fraction in [0, 1]", self.anneal_offline_to)
        _check(self.capacity_rows >= 1, "online.capacity_rows", "at least 1", self.capacity_rows)


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """The shared backbone, the per-game heads and the value representation."""

    backbone: str = "nature"
    """Backbone name from ``scaled_ql.models.BACKBONES`` (``nature``, ``impala``, ``resnet18``,
    ``resnet34``, ``resnet50``, ``resnet101``, ``vit``)."""
    width: int = 1
    """Channel multiplier for the CNN backbones (IMPALA: 16/32/32 channels times width; ResNet:
    its stage widths times width)."""
    norm_groups: int = 32
    """Groups of the group normalization in the ResNet backbones (Scaled QL uses group norm,
    never batch norm: batch statistics break TD learning)."""
    patch_size: int = 12
    """ViT: side of the square patches (84 / 12 = 7 x 7 patches)."""
    vit_hidden: int = 256
    """ViT: transformer width."""
    vit_depth: int = 4
    """ViT: number of transformer layers."""
    vit_heads: int = 4
    """ViT: attention heads per layer."""
    shared_head: bool = False
    """One head over the full 18-action set shared by all games (Multi-Game DT style) instead of
    one head per game; requires ``env.full_action_space``."""
    feature_dim: int = 512
    """Size of the penultimate representation phi(s) that DR3 regularizes."""
    feature_norm: bool = False
    """L2-normalize phi(s) before the heads (Scaled QL's feature normalization)."""
    value: str = "scalar"
    """Value representation from ``scaled_ql.losses.VALUE_KINDS`` (``scalar``, ``c51``, ``hl_gauss``)."""
    num_atoms: int = 51
    """Number of atoms of the C51 support."""
    v_min: float = -10.0
    """Lowest atom of the C51 support."""
    v_max: float = 10.0
    """Highest atom of the C51 support."""
    hl_gauss_sigma: float = 0.75
    """HL-Gauss: standard deviation of the Gaussian smoothing, in bin widths (Farebrother et al., 2024)."""
    policy_head: bool = False
    """A second per-game head of action logits on phi(s): the behaviour-cloned policy of BRAC or
    the advantage-weighted policy of IQL: ``loss.algorithm`` ``iql`` and ``brac`` need it."""
    state_value_head: bool = False
    """A per-game scalar head V(s) on phi(s) (IQL's expectile value): ``loss.algorithm=iql`` needs it."""
    act_with: str = "q"
    """What picks the greedy action: ``q`` (argmax_a Q(s, a)) or ``policy`` (argmax of the policy
    head's logits). ``loss.algorithm=iql`` needs ``policy``."""

    def __post_init__(self) -> None:
        _check(self.width >= 1, "model.width", "at least 1", self.width)
        _check(self.feature_dim >= 1, "model.feature_dim", "at least 1", self.feature_dim)
        _check(self.num_atoms >= 2, "model.num_atoms", "at least 2", self.num_atoms)
        _check(self.v_max > self.v_min, "model.v_max", f"greater than model.v_min={self.v_min}", self.v_max)
        _check(self.norm_groups >= 1, "model.norm_groups", "at least 1", self.norm_groups)
        _check(self.patch_size >= 1, "model.patch_size", "at least 1", self.patch_size)
        _check(self.vit_hidden % max(self.vit_heads, 1) == 0, "model.vit_hidden", f"a multiple of model.vit_heads={self.vit_heads}", self.vit_hidden)
        _check(self.hl_gauss_sigma > 0, "model.hl_gauss_sigma", "a positive number", self.hl_gauss_sigma)
        _check(self.act_with in ("q", "policy"), "model.act_with", "'q' or 'policy'", self.act_with)
        _check(self.act_with == "q" or self.policy_head, "model.act_with",
               "'q' unless model.policy_head is true (acting with a policy needs the policy head)", self.act_with)


@dataclass(kw_only=True, slots=True)
class LossConfig:
    """The learning algorithm and the weights of its loss terms (``q_learning``: TD + cql_alpha *
    CQL + dr3_coef * DR3)."""

    algorithm: str = "q_learning"
    """One of ``scaled_ql.losses.ALGORITHMS``, all over the same network and data (each checks, before
    any work starts, that the ``model`` section gives it the heads it needs; the error names the key):
    ``q_learning`` TD + ``cql_alpha`` CQL (or Cal-QL) + ``dr3_coef`` DR3: DQN when both weights
                   are 0, CQL, CQL + DR3 (Scaled QL);
    ``bc``         behaviour cloning: the per-game head is trained as a classifier of the data
                   action (its outputs are action logits, not values; needs ``model.value=scalar``);
    ``iql``        implicit Q-learning: expectile V head, Q regressed on r + gamma V(s'), policy head
                   by advantage-weighted BC, acting with the policy head (needs ``model.value=scalar
                   model.policy_head=true model.state_value_head=true model.act_with=policy``);
    ``brac``       the ``q_learning`` loss + ``brac_alpha`` KL(softmax(Q / T) || pi_b), pi_b a
                   behaviour-cloned policy head trained beside it (needs ``model.policy_head=true``;
                   set ``cql_alpha=0`` for plain BRAC)."""
    cql_alpha: float = 0.1
    """Weight of the discrete CQL penalty logsumexp_a Q(s, a) - Q(s, a_data); 0 disables it
    (plain DQN-style offline Q-learning)."""
    calibrated: bool = False
    """Cal-QL (Nakamoto et al., 2023), the named variant ``scaled_ql.losses.CalQL`` of ``q_learning``
    (and of ``brac``'s Q-learning part): the push-down term uses max(Q(s, a), V_ref(s)), with V_ref
    the discounted Monte-Carlo return-to-go of the data's episode, so a conservative start is
    not unlearned when fine-tuning."""
    dr3_coef: float = 0.03
    """Weight of DR3, mean |phi(s) . phi(s')|; 0 disables it."""
    huber_delta: float = 1.0
    """Huber threshold of the scalar TD loss."""
    double_q: bool = True
    """Double DQN: the online network picks the next action, the target network values it."""
    iql_expectile: float = 0.7
    """IQL: the expectile tau of V(s) regressed on Q_target(s, a_data) (0.5 = the mean; -> 1 the
    in-sample maximum). 0.7 as in the paper's locomotion runs."""
    iql_beta: float = 3.0
    """IQL: inverse temperature of the advantage weights exp(beta (Q - V)) of the policy (0 = BC)."""
    iql_max_weight: float = 100.0
    """IQL: the clip of exp(beta A), as in the reference code."""
    brac_alpha: float = 0.1
    """BRAC: weight of KL(softmax(Q / brac_temperature) || pi_b)."""
    brac_temperature: float = 1.0
    """BRAC: temperature of the Boltzmann policy of Q."""

    def __post_init__(self) -> None:
        _check(0.0 < self.iql_expectile < 1.0, "loss.iql_expectile", "a number in (0, 1)", self.iql_expectile)
        _check(self.iql_beta >= 0.0, "loss.iql_beta", "a non-negative number", self.iql_beta)
        _check(self.iql_max_weight > 0.0, "loss.iql_max_weight", "a positive number", self.iql_max_weight)
        _check(self.brac_alpha >= 0.0, "loss.brac_alpha", "a non-negative number", self.brac_alpha)
        _check(self.brac_temperature > 0.0, "loss.brac_temperature", "a positive number", self.brac_temperature)
        _check(self.cql_alpha >= 0.0, "loss.cql_alpha", "a non-negative number", self.cql_alpha)
        _check(self.dr3_coef >= 0.0, "loss.dr3_coef", "a non-negative number", self.dr3_coef)
        _check(self.huber_delta > 0.0, "loss.huber_delta", "a positive number", self.huber_delta)


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """The one training loop: optimizer, target network, logging, checkpoints, evaluation."""

    steps: int = 1_000
    """Number of gradient updates."""
    batch_size: int = 32
    """Transitions per update; split evenly across games (per-game balance)."""
    lr: float = 1e-4
    """Adam learning rate."""
    adam_eps: float = 1.5e-4
    """Adam epsilon (DQN-Zoo / Dopamine value)."""
    lr_schedule: str = "constant"
    """How the learning rate moves over the updates: ``constant``, ``linear`` or ``cosine`` (from
    ``lr`` down to ``lr * lr_final_ratio`` at update ``lr_decay_steps``, then held there). A pure
    function of the update, so exact resume is unaffected."""
    lr_warmup_steps: int = 0
    """Updates of linear warm-up from 0 to ``lr`` before the schedule starts (any schedule)."""
    lr_decay_steps: int = 0
    """The update at which ``linear`` and ``cosine`` reach their final rate; 0: ``train.steps``."""
    lr_final_ratio: float = 0.1
    """The final learning rate of ``linear`` and ``cosine`` as a fraction of ``lr``."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 10.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    target_update_period: int = 2_000
    """Copy the online weights into the target network every this many updates."""
    log_every: int = 50
    """Write TensorBoard scalars every this many updates."""
    checkpoint_every: int = 500
    """Save a checkpoint every this many updates (and at the end)."""
    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""
    eval_every: int = 0
    """Run an ALE evaluation every this many updates (0: only at the end, if eval.episodes > 0)."""
    device: str = "auto"
    """``auto`` (cuda if available, else cpu), ``cpu`` or ``cuda``."""
    threads: int = 0
    """torch intra-op threads on CPU; 0 keeps torch's default."""
    channels_last: bool = True
    """Use channels_last memory format for the conv backbone (faster on CPU and GPU)."""
    augment: str = "none"
    """Image augmentation of every training batch, on its device, for every algorithm: ``none`` or
    ``shift`` (DrQ's random shift: replicate-pad ``augment_pad`` pixels, random crop back to the
    frame size; one shift per stack, independent for s and s')."""
    augment_pad: int = 4
    """Largest shift in pixels of ``augment=shift`` (DrQ: 4 for 84x84 frames)."""
    prefetch: int = 2
    """Batches drawn ahead of the update on a background thread (and, on CUDA, copied to the device
    on their own stream); 0 draws each batch in the loop. The order of the batches and exact resume
    are the same either way. Not used by online fine-tuning, whose batches depend on the actor."""
    compile: bool = False
    """``torch.compile`` the network's forward (default off: on this project's CPU benchmark it
    did not pay for its compile time; see the README's performance section)."""

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "train.steps", "at least 1", self.steps)
        _check(self.batch_size >= 1, "train.batch_size", "at least 1", self.batch_size)
        _check(self.lr > 0.0, "train.lr", "a positive number", self.lr)
        _check(self.lr_schedule in ("constant", "linear", "cosine"), "train.lr_schedule", "'constant', 'linear' or 'cosine'",
               self.lr_schedule)
        _check(self.lr_warmup_steps >= 0, "train.lr_warmup_steps", "at least 0", self.lr_warmup_steps)
        _check(self.lr_decay_steps >= 0, "train.lr_decay_steps", "at least 0", self.lr_decay_steps)
        _check(0.0 <= self.lr_final_ratio <= 1.0, "train.lr_final_ratio", "a number in [0, 1]", self.lr_final_ratio)
        _check(self.target_update_period >= 1, "train.target_update_period", "at least 1", self.target_update_period)
        _check(self.log_every >= 1, "train.log_every", "at least 1", self.log_every)
        _check(self.checkpoint_every >= 1, "train.checkpoint_every", "at least 1", self.checkpoint_every)
        _check(self.keep_checkpoints >= 1, "train.keep_checkpoints", "at least 1", self.keep_checkpoints)
        _check(self.device in ("auto", "cpu", "cuda"), "train.device", "'auto', 'cpu' or 'cuda'", self.device)
        _check(self.augment in ("none", "shift"), "train.augment", "'none' or 'shift'", self.augment)
        _check(0 <= self.augment_pad <= 16, "train.augment_pad", "an integer in [0, 16]", self.augment_pad)
        _check(0 <= self.prefetch <= 64, "train.prefetch", "an integer in [0, 64]", self.prefetch)


@dataclass(kw_only=True, slots=True)
class DistConfig:
    """How the one training loop is spread over processes (applied at the loop's edge by accelerate).

    ``train.batch_size`` is the global batch; each process draws
    ``batch_size / (world_size * grad_accum)`` transitions per micro-batch, which must be a
    multiple of the number of games so every micro-batch stays per-game balanced.
    """

    backend: str = "ddp"
    """``ddp`` (plain data parallel; also a single process), ``deepspeed`` (ZeRO through
    accelerate's DeepSpeed integration) or ``fsdp``."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage (1: optimizer states sharded; 2: also gradients)."""
    mixed_precision: str = "auto"
    """``auto`` (bf16 on GPU, fp32 on CPU, whose bf16 matmul is very slow), ``no`` or ``bf16``."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer update."""
    world_size: int = 0
    """Number of processes. 0: take the launcher's; the resolved value is recorded in the run's
    config.json, and a launch with another number stops with both named."""

    def __post_init__(self) -> None:
        _check(self.backend in ("ddp", "deepspeed", "fsdp"), "dist.backend", "'ddp', 'deepspeed' or 'fsdp'", self.backend)
        _check(self.zero_stage in (1, 2), "dist.zero_stage", "1 or 2", self.zero_stage)
        _check(self.mixed_precision in ("auto", "no", "bf16"), "dist.mixed_precision", "'auto', 'no' or 'bf16'", self.mixed_precision)
        _check(self.grad_accum >= 1, "dist.grad_accum", "at least 1", self.grad_accum)
        _check(self.world_size >= 0, "dist.world_size", "0 (the launcher's) or a positive integer", self.world_size)


@dataclass(kw_only=True, slots=True)
class EvalConfig:
    """ALE evaluation: epsilon-greedy episodes on ale_py's vectorized environment."""

    episodes: int = 10
    """Episodes per game."""
    num_envs: int = 8
    """Parallel environments per game."""
    epsilon: float = 0.001
    """Evaluation epsilon (DQN-era protocol)."""
    max_episode_steps: int = 0
    """If > 0, cut evaluation episodes after this many agent steps (a CPU-budget cap; the
    protocol's 108,000-frame cap always applies). Results record it."""
    bootstrap_samples: int = 2_000
    """Stratified-bootstrap resamples for the 95% confidence intervals."""
    baselines: bool = False
    """At the final evaluation, also play a uniformly random policy under the same protocol and
    report it beside the dataset's behaviour return and the learned policy's (what it thinks it
    gets, Q(s0), beside what it gets): the table ``make demo`` prints."""

    def __post_init__(self) -> None:
        _check(self.episodes >= 0, "eval.episodes", "a non-negative integer", self.episodes)
        _check(self.num_envs >= 1, "eval.num_envs", "at least 1", self.num_envs)
        _check(0.0 <= self.epsilon <= 1.0, "eval.epsilon", "a probability in [0, 1]", self.epsilon)


def _check(ok: bool, key: str, expected: str, found: Any) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': expected {expected}, found {found!r}")


