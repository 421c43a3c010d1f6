"""The training loop: resume, checkpoints, schedules, tasks of any kind, inputs of any shape."""
import torch

from helpers.training.augment import augment_images
from helpers.training.batching import make_rank_indices


torch.set_num_threads(1)


def test_rank_indices_and_augment():
    a = make_rank_indices(10, 1, 0, rank=0, world_size=3)
    b = make_rank_indices(10, 1, 0, rank=1, world_size=3)
    c = make_rank_indices(10, 1, 0, rank=2, world_size=3)
    assert len(a) == len(b) == len(c) == 4
    assert set(torch.cat([a, b, c]).tolist()) == set(range(10))
    assert torch.equal(make_rank_indices(10, 1, 0), make_rank_indices(10, 1, 0))
    assert not torch.equal(make_rank_indices(10, 1, 0), make_rank_indices(10, 2, 0))
    x = torch.rand(5, 1, 8, 8)
    out = augment_images(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    ident = augment_images(x, torch.Generator().manual_seed(0), rotation=0, translate=0, crop_scale=(1, 1))
    torch.testing.assert_close(ident, x, atol=1e-5, rtol=0)
