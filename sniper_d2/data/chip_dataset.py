"""The chip-level training stream: per-epoch chip lists from a plan, shuffled, sharded, mapped.

Epoch ``e`` uses the plan's epoch ``e % plan_epochs``: all of its positive chips plus up to
``negatives_per_image`` of its negative chips per image, sampled with a seed derived from
(seed, e), then shuffled with the same seed. The global list is split across DDP ranks
(``rank::world_size``); data-loader workers build whole batches in turn (see :class:`ChipStream`).
The chips of iteration ``k`` are a pure function of (plan, seed, world size, k), so resuming at
iteration ``k`` (:func:`build_chip_train_loader` with ``start_iter=k``) continues the exact sequence.
"""

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.utils import comm

from ..config_types import ValidRange

__all__ = ["epoch_chip_indices", "ChipStreamSpec", "ChipStream", "build_chip_train_loader",
           "chip_dict"]

logger = logging.getLogger(__name__)


def epoch_chip_indices(plan, epoch, negatives_per_image, seed):
    """Indices into the plan's chip arrays for one training epoch, in training order.

    Args:
        plan (ChipPlan): arrays ``epoch``, ``image_index``, ``is_negative`` of shape (M,).
        epoch (int): training epoch (0, 1, ...); the plan's epoch ``epoch % plan_epochs`` is used.
        negatives_per_image (int): negative chips sampled per image (all positives are kept).
        seed (int): base seed.

    Returns:
        (K,) int64 array of chip indices.
    """
    plan_epochs = int(plan.epoch.max()) + 1 if len(plan.epoch) else 1
    rng = np.random.default_rng([seed, epoch])
    in_epoch = np.flatnonzero(plan.epoch == epoch % plan_epochs)
    negative = plan.is_negative[in_epoch]
    positives = in_epoch[~negative]
    negatives = in_epoch[negative]
    if len(negatives) and negatives_per_image > 0:
        # Rank negatives randomly within each image and keep the first `negatives_per_image`.
        keys = rng.random(len(negatives))
        images = plan.image_index[negatives]
        order = np.lexsort((keys, images))
        sorted_images = images[order]
        group_start = np.searchsorted(sorted_images, sorted_images, side="left")
        rank_in_image = np.arange(len(order)) - group_start
        negatives = negatives[order[rank_in_image < negatives_per_image]]
    else:
        negatives = negatives[:0]
    chosen = np.concatenate([positives, negatives])
    return chosen[rng.permutation(len(chosen))]


def chip_dict(dataset_dict, plan, index, valid_ranges):
    """The mapper's input for chip ``index`` of the plan (see docs/ARCHITECTURE.md)."""
    scale_index = int(plan.scale_index[index])
    valid_range = ValidRange.parse(valid_ranges[scale_index])
    return {
        "file_name": dataset_dict["file_name"],
        "image_id": dataset_dict["image_id"],
        "height": dataset_dict["height"],
        "width": dataset_dict["width"],
        "annotations": dataset_dict["annotations"],
        "chip": [float(v) for v in plan.chips[index]],
        "scale": float(plan.scale[index]),
        "scale_index": scale_index,
        "valid_range": [valid_range.lo, valid_range.hi],
        "is_negative": bool(plan.is_negative[index]),
    }


@dataclass
class ChipStreamSpec:
    """Where in the global chip sequence a process and its workers are.

    Attributes:
        batch_size: chips per iteration per process.
        rank, world_size: DDP position.
        start_iter: first iteration to produce (resume point).
        negatives_per_image: negative chips sampled per image per epoch.
        seed: base seed of the epoch sampling.
    """

    batch_size: int
    rank: int = 0
    world_size: int = 1
    start_iter: int = 0
    negatives_per_image: int = 2
    seed: int = 0


class _RankSequence:
    """One process's endless chip sequence (plan chip indices), with random access by position.

    Position ``p`` is the p-th chip this rank trains on: epochs' chip lists (sharded
    ``rank::world_size``) one after the other. Epoch lists are computed on demand; old ones dropped.
    """

    def __init__(self, plan, spec):
        self.plan = plan
        self.spec = spec
        self._epochs = {}  # epoch -> (start position, chip indices)
        self._next_epoch, self._next_start = 0, 0

    def __getitem__(self, pos):
        while pos >= self._next_start:
            s = self.spec
            chips = epoch_chip_indices(self.plan, self._next_epoch, s.negatives_per_image, s.seed)[s.rank::s.world_size]
            if len(chips) == 0:
                raise ValueError(f"epoch {self._next_epoch} has no chip for process {s.rank} of {s.world_size}: "
                                 "the plan holds fewer chips than processes")
            self._epochs[self._next_epoch] = (self._next_start, chips)
            self._epochs.pop(self._next_epoch - 3, None)
            self._next_epoch += 1
            self._next_start += len(chips)
        for start, chips in self._epochs.values():
            if start <= pos < start + len(chips):
                return int(chips[pos - start])
        raise IndexError(f"chip position {pos} is before the epochs kept in memory")


class ChipStream(torch.utils.data.IterableDataset):
    """An endless stream of batches of mapped chips (one process's share).

    Batch ``j`` holds this rank's chips at positions ``j*B .. (j+1)*B - 1``; data-loader worker ``w``
    builds the batches ``j = start_iter + w, start_iter + w + W, ...``, which torch's DataLoader
    returns round-robin, i.e. in order. A chip whose image cannot be read (the mapper returns None)
    is replaced by the chips after the batch, in order. So batch ``j`` depends only on (plan, seed,
    rank, world size, j): not on the number of workers, and not on where training was resumed.
    """

    MAX_CONSECUTIVE_FAILURES = 100

    def __init__(self, plan, dataset_dicts, valid_ranges, mapper, spec):
        """
        Args:
            plan (ChipPlan): chips of all epochs; ``plan.image_index`` indexes ``dataset_dicts``.
            dataset_dicts (list[dict]): detectron2 dicts of the training images.
            valid_ranges (list[ValidRange]): per scale index, sqrt(w*h) in original pixels.
            mapper (callable): chip dict -> model input dict, or None to skip a bad chip.
            spec (ChipStreamSpec): batching, sharding and resume position.
        """
        self.plan = plan
        self.dataset_dicts = dataset_dicts
        self.valid_ranges = valid_ranges
        self.mapper = mapper
        self.spec = spec
        if not np.any(~plan.is_negative) and spec.negatives_per_image <= 0:
            raise ValueError("the chip plan holds no positive chips and no negatives are sampled: "
                             "nothing to train on (are the data set's boxes all invalid?)")

    def _map(self, index):
        record = self.dataset_dicts[int(self.plan.image_index[index])]
        return self.mapper(chip_dict(record, self.plan, index, self.valid_ranges))

    def _batch(self, sequence, j):
        size = self.spec.batch_size
        spare = (j + 1) * size
        batch = []
        for pos in range(j * size, (j + 1) * size):
            mapped, failures = self._map(sequence[pos]), 0
            while mapped is None:  # an unreadable image, skipped and counted by the mapper
                failures += 1
                if failures > self.MAX_CONSECUTIVE_FAILURES:
                    raise RuntimeError(f"{failures} chips in a row could not be loaded; see the warnings above")
                mapped, spare = self._map(sequence[spare]), spare + 1
            batch.append(mapped)
        return batch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        sequence = _RankSequence(self.plan, self.spec)
        for j in itertools.count(self.spec.start_iter + worker, num_workers):
            yield self._batch(sequence, j)


def build_chip_train_loader(plan, dataset_dicts, valid_ranges, mapper, spec, num_workers):
    """A DataLoader yielding lists of ``spec.batch_size`` mapped chips per iteration."""
    stream = ChipStream(plan, dataset_dicts, valid_ranges, mapper, spec)
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=num_workers, collate_fn=_keep_as_is,
        worker_init_fn=_seed_worker, persistent_workers=num_workers > 0,
    )


def _keep_as_is(batch):
    return batch


def _seed_worker(worker_id):
    # Flips and other random augmentations: distinct per worker and rank, reproducible.
    seed = (torch.initial_seed() + comm.get_rank() * 1000 + worker_id) % 2**32
    np.random.seed(seed)
