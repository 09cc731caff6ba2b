"""DrQ random shift: what a user relies on when turning on ``train.augment=shift``."""

import pytest
import torch
import torch.nn.functional as F

from scaled_ql.config import ConfigError, TrainConfig
from scaled_ql.data.augment import augment_batch, random_shift
from scaled_ql.data.batch import TorchBatch


def _batch(n: int = 6) -> TorchBatch:
    g = torch.Generator().manual_seed(1)
    obs = torch.randint(0, 256, (n, 4, 84, 84), generator=g, dtype=torch.int64).to(torch.uint8)
    nxt = torch.randint(0, 256, (n, 4, 84, 84), generator=g, dtype=torch.int64).to(torch.uint8)
    z = torch.zeros(n)
    return TorchBatch(obs=obs, action=torch.zeros(n, dtype=torch.long), reward=z, discount=z, next_obs=nxt,
                      game=torch.zeros(n, dtype=torch.long))


def test_shift_is_replicate_pad_then_crop_with_one_offset_per_stack():
    x = _batch().obs
    y = random_shift(x, 4, torch.Generator().manual_seed(3))
    offsets = torch.randint(0, 9, (x.shape[0], 2), generator=torch.Generator().manual_seed(3))
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="replicate")
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(y[i], padded[i, :, dy:dy + 84, dx:dx + 84].to(torch.uint8))  # all 4 frames, same offset
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert not torch.equal(y, x)  # 6 stacks, 81 offsets each: all unshifted has probability 81**-6


def test_augment_batch_is_deterministic_per_seed_and_step_and_shifts_s_and_next_independently():
    b = _batch()
    a1, a2 = augment_batch(b, "shift", 4, seed=0, step=7), augment_batch(b, "shift", 4, seed=0, step=7)
    assert torch.equal(a1.obs, a2.obs) and torch.equal(a1.next_obs, a2.next_obs)  # exact resume needs no saved state
    assert not torch.equal(augment_batch(b, "shift", 4, seed=0, step=8).obs, a1.obs)
    same = _batch()
    same.next_obs = same.obs.clone()
    out = augment_batch(same, "shift", 4, seed=0, step=1)
    assert not torch.equal(out.obs, out.next_obs)  # DrQ: s and s' get their own shifts
    assert torch.equal(out.action, b.action) and augment_batch(b, "none", 4, 0, 0) is b


def test_unknown_augmentation_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="train.augment"):
        TrainConfig(augment="crop")
