"""The chip training stream: per-epoch sampling, sharding, and exact resume."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from sniper_d2.data.chip_dataset import ChipStream, ChipStreamSpec, epoch_chip_indices


def fake_plan(epochs=3, images=5, pos_per_image=3, neg_per_image=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(epochs):
        for i in range(images):
            rows += [(e, i, False)] * pos_per_image + [(e, i, True)] * neg_per_image
    epoch, image, neg = (np.array(c) for c in zip(*rows))
    m = len(rows)
    x0 = rng.uniform(0, 100, m).astype(np.float32)
    return SimpleNamespace(epoch=epoch.astype(np.int32), image_index=image.astype(np.int32),
                           is_negative=neg.astype(bool), scale_index=np.zeros(m, np.int32),
                           scale=np.ones(m, np.float32),
                           chips=np.stack([x0, x0, x0 + 50, x0 + 50], 1).astype(np.float32))


def test_epoch_keeps_all_positives_and_samples_negatives_per_image():
    plan = fake_plan()
    idx = epoch_chip_indices(plan, epoch=1, negatives_per_image=2, seed=7)
    assert (plan.epoch[idx] == 1).all()
    pos = idx[~plan.is_negative[idx]]
    assert sorted(pos.tolist()) == np.flatnonzero((plan.epoch == 1) & ~plan.is_negative).tolist()
    neg_images = plan.image_index[idx[plan.is_negative[idx]]]
    assert np.bincount(neg_images, minlength=5).tolist() == [2] * 5
    assert len(set(idx.tolist())) == len(idx)


def test_epochs_are_deterministic_per_seed_and_differ_across_epochs_and_cycle():
    plan = fake_plan()
    a = epoch_chip_indices(plan, 0, 2, seed=1)
    assert np.array_equal(a, epoch_chip_indices(plan, 0, 2, seed=1))
    assert not np.array_equal(a, epoch_chip_indices(plan, 0, 2, seed=2))
    # Epoch 3 reuses the plan's epoch 0 chips, in a new order and with new negatives.
    d = epoch_chip_indices(plan, 3, 2, seed=1)
    assert (plan.epoch[d] == 0).all()


def test_zero_negatives_per_image_gives_positives_only():
    plan = fake_plan()
    idx = epoch_chip_indices(plan, 0, 0, seed=0)
    assert not plan.is_negative[idx].any()


def _stream(plan, spec):
    dicts = [{"file_name": f"img{i}.jpg", "image_id": i, "height": 200, "width": 200, "annotations": []}
             for i in range(5)]
    mapper = lambda d: (d["image_id"], tuple(d["chip"]), d["is_negative"])  # noqa: E731
    return ChipStream(plan, dicts, [(0, -1)], mapper, spec)


def _batches(stream, n):
    return list(itertools.islice(iter(stream), n))


@pytest.mark.parametrize("start", [1, 5, 13])
def test_resume_continues_the_exact_sequence(start):
    plan = fake_plan()
    full = _batches(_stream(plan, ChipStreamSpec(batch_size=3, seed=4)), 20)
    resumed = _batches(_stream(plan, ChipStreamSpec(batch_size=3, seed=4, start_iter=start)), 20 - start)
    assert resumed == full[start:]


def test_ranks_see_disjoint_chips_covering_the_epoch():
    plan = fake_plan()
    epoch_len = len(epoch_chip_indices(plan, 0, 2, seed=0))
    seen = []
    for rank in range(2):
        spec = ChipStreamSpec(batch_size=1, rank=rank, world_size=2, seed=0)
        seen += [b[0] for b in _batches(_stream(plan, spec), epoch_len // 2)]
    assert len(set(seen)) == epoch_len // 2 * 2


def test_batches_do_not_depend_on_the_number_of_workers():
    plan = fake_plan()
    one = _batches(_stream(plan, ChipStreamSpec(batch_size=3, seed=4)), 12)
    # Worker w of W builds batches w, w + W, ...; interleaving them must give the same sequence.
    stream = _stream(plan, ChipStreamSpec(batch_size=3, seed=4))
    sequence = __import__("sniper_d2.data.chip_dataset", fromlist=["_RankSequence"])._RankSequence(plan, stream.spec)
    assert [stream._batch(sequence, j) for j in range(12)] == one


def test_skipped_chips_are_replaced_not_batched_short():
    plan = fake_plan()
    dicts = [{"file_name": f"img{i}.jpg", "image_id": i, "height": 200, "width": 200, "annotations": []}
             for i in range(5)]
    mapper = lambda d: None if d["image_id"] == 2 else d["image_id"]  # noqa: E731
    stream = ChipStream(plan, dicts, [(0, -1)], mapper, ChipStreamSpec(batch_size=4))
    for batch in _batches(stream, 10):
        assert len(batch) == 4 and 2 not in batch
