"""The d3rlpy peer of the learning benchmark sees exactly our transitions (skipped without d3rlpy,
an optional benchmark dependency that `make setup` installs)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fixtures import decode_stack, write_synthetic_dataset

d3rlpy = pytest.importorskip("d3rlpy")

from benchmarks.learning_peer import export_mdp_dataset  # noqa: E402


@pytest.mark.parametrize("game", ["Pong", "Breakout"])
def test_exported_transitions_are_our_one_step_transitions(tmp_path, game):
    data = write_synthetic_dataset(tmp_path / "d")
    dataset = export_mdp_dataset(data.path, game)
    picker = d3rlpy.dataset.FrameStackTransitionPicker(n_frames=4)
    mine = [(i, ep) for i, ep in enumerate(data.episodes) if ep.game == game]
    assert len(dataset.episodes) == len(mine)
    assert dataset.transition_count == sum(len(ep.rewards) for _, ep in mine)  # one per agent step, none from final rows
    seen = set()
    for episode in dataset.episodes:
        for t in range(episode.transition_count):
            tr = picker(episode, t)
            obs = decode_stack(tr.observation)
            index, step = obs[-1]
            want = data.expected_transition(index, step, n_step=1, gamma=0.99, reward_clip=0.0)
            assert obs == want["obs"] and int(tr.action[0]) == want["action"]
            assert float(tr.reward[0]) == pytest.approx(want["reward"])
            assert bool(tr.terminal) == (want["discount"] == 0.0)
            if not tr.terminal:  # d3rlpy gives zeros after a terminal; we give the final frame with discount 0
                assert decode_stack(tr.next_observation) == want["next_obs"]
            seen.add((index, step))
    assert seen == {(i, s) for i, ep in mine for s in range(len(ep.rewards))}


def test_our_update_is_d3rlpy_discrete_cql_update(tmp_path, debug_dataset):
    """Same weights and same batches: our CQL update step (double DQN target, Huber TD, CQL(H),
    AdamW without weight decay, gradient-norm clipping) moves the network exactly as d3rlpy's
    DiscreteCQL does, update after update. So a difference between the two in the learning
    benchmark comes from what is not shared (initial weights, the order of the batches, and
    d3rlpy syncing its target one update earlier), not from the algorithm."""
    import torch

    from scaled_ql.data.batch import Batch
    from scaled_ql.losses import make_algorithm
    from scaled_ql.train.step import sync_target, train_step
    from scaled_ql.train.trainer import build_training_state
    from tests.conftest import debug_config

    torch.manual_seed(0)
    cfg = debug_config(tmp_path, f"data.path={debug_dataset}", "games=[Breakout]", "data.n_step=1", "model.backbone=nature",
                       "model.value=scalar", "model.feature_dim=512", "env.frame_size=84", "loss.cql_alpha=1.0",
                       "loss.dr3_coef=0", "train.lr=3e-4", "train.grad_clip=10")
    dataset = export_mdp_dataset(debug_dataset, "Breakout")
    algo = d3rlpy.algos.DiscreteCQLConfig(
        learning_rate=cfg.train.lr,
        optim_factory=d3rlpy.optimizers.AdamFactory(eps=cfg.train.adam_eps, clip_grad_norm=cfg.train.grad_clip),
        encoder_factory=d3rlpy.models.PixelEncoderFactory(feature_size=512), batch_size=8, gamma=cfg.data.gamma,
        target_update_interval=2, alpha=cfg.loss.cql_alpha,
        observation_scaler=d3rlpy.preprocessing.PixelObservationScaler(),
        reward_scaler=d3rlpy.preprocessing.ClipRewardScaler(-1.0, 1.0),
    ).create(device="cpu:0")
    algo.build_with_dataset(dataset)
    model, target, optimizer = build_training_state(cfg, torch.device("cpu"))
    theirs = algo.impl.q_function[0]
    layers = [m for m in theirs.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    ours = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert [type(m) for m in layers] == [type(m) for m in ours]  # 3 convs, the 512-unit layer, the head
    with torch.no_grad():
        for a, b in zip(layers, ours):
            assert a.weight.shape == b.weight.shape
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    sync_target(model, target)
    start = [m.weight.detach().clone() for m in ours]

    picker = d3rlpy.dataset.FrameStackTransitionPicker(n_frames=4)
    transitions = [picker(ep, t) for ep in dataset.episodes for t in range(ep.transition_count)]
    rng = np.random.default_rng(0)
    for i in range(6):
        chosen = [transitions[i] for i in rng.choice(len(transitions), 8, replace=False)]
        terminal = np.array([float(tr.terminal) for tr in chosen], dtype=np.float32)
        batch = Batch(
            obs=np.stack([tr.observation for tr in chosen]).astype(np.uint8),
            action=np.array([int(tr.action[0]) for tr in chosen], dtype=np.int64),
            reward=np.clip([float(tr.reward[0]) for tr in chosen], -1.0, 1.0).astype(np.float32),
            discount=(cfg.data.gamma * (1.0 - terminal)).astype(np.float32),
            next_obs=np.stack([tr.next_observation for tr in chosen]).astype(np.uint8),
            game=np.zeros(8, dtype=np.int64),
        )
        mine = train_step(model, target, optimizer, batch.to_torch(), make_algorithm(cfg), cfg.train.grad_clip)
        if i % 2 == 0:  # d3rlpy syncs its target after updates 0, 2, 4, ... (the trainer: after 2, 4, ...)
            sync_target(model, target)
        their = algo.update(d3rlpy.dataset.TransitionMiniBatch.from_transitions(chosen))
        assert float(mine["loss/td"]) == pytest.approx(their["td_loss"], rel=1e-4, abs=1e-6)
        assert float(mine["loss/cql"]) == pytest.approx(their["conservative_loss"], rel=1e-4, abs=1e-6)
        for a, b in zip(layers, ours):
            torch.testing.assert_close(b.weight, a.weight, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(b.bias, a.bias, rtol=1e-4, atol=1e-6)
    assert all(not torch.equal(m.weight, w0) for m, w0 in zip(ours, start))  # every layer learned
