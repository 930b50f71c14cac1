"""Building the SNIPER training loader from a config: records -> plan -> chip stream."""

import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.utils import comm

from ..coco import DatasetError
from ..config_types import ConfigError
from ..plans import PlanParams
from .chip_dataset import ChipStreamSpec, build_chip_train_loader
from .datasets import load_records_for_dataset, records_to_dataset_dicts
from .plan_sharing import load_or_build_plan_distributed

__all__ = ["default_plan_path", "build_sniper_train_loader", "load_training_plan", "ResumableTrainLoader"]

logger = logging.getLogger(__name__)


def default_plan_path(cfg):
    """``cfg.SNIPER.PLAN.FILE``, or ``<OUTPUT_DIR>/chip_plan_<train sets>.npz`` when empty."""
    if cfg.SNIPER.PLAN.FILE:
        return cfg.SNIPER.PLAN.FILE
    return os.path.join(cfg.OUTPUT_DIR, "chip_plan_" + "+".join(cfg.DATASETS.TRAIN) + ".npz")


def training_records(cfg):
    """Numpy records and detectron2 dicts of all training sets, concatenated."""
    records, dicts = [], []
    for name in cfg.DATASETS.TRAIN:
        recs = load_records_for_dataset(name)
        id_map = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
        dicts.extend(records_to_dataset_dicts(recs, id_map))
        records.extend(recs)
    if not records:
        raise DatasetError(f"training data sets {list(cfg.DATASETS.TRAIN)} hold no images")
    return records, dicts


def load_training_plan(cfg, records):
    """Load the chip plan matching (config, data), or build it with every process planning its share."""
    params = PlanParams.from_cfg(cfg)
    proposals = None
    if cfg.SNIPER.NEG.PROPOSALS_FILE and params.mode == "sliced":
        logger.warning(f"SNIPER.PLAN.MODE \"sliced\" trains every tile, background included: SNIPER.NEG.PROPOSALS_FILE "
                       f"{cfg.SNIPER.NEG.PROPOSALS_FILE} is not used")
    elif cfg.SNIPER.NEG.PROPOSALS_FILE:
        from ..proposals import load_proposals_for_records

        proposals = load_proposals_for_records(cfg.SNIPER.NEG.PROPOSALS_FILE, records, cfg.SNIPER.SCALES)
    path = default_plan_path(cfg)
    plan = load_or_build_plan_distributed(path, records, params, cfg.SNIPER.PLAN.EPOCHS, cfg.SNIPER.PLAN.SEED,
                                          num_workers=cfg.SNIPER.PLAN.NUM_WORKERS, proposals=proposals)
    source = "SNIPER.PLAN.FILE" if cfg.SNIPER.PLAN.FILE else "default path; set SNIPER.PLAN.FILE to use another"
    logger.info(f"training on chip plan {os.path.abspath(path)} ({source}): {len(plan)} chips, {plan.epochs} epochs")
    return plan, params


def build_sniper_train_loader(cfg, mapper, start_iter=0):
    """The chip training loader of ``cfg`` for this process, starting at ``start_iter``.

    Returns:
        DataLoader yielding lists of ``SOLVER.IMS_PER_BATCH // world_size`` mapped chips.
    """
    records, dicts = training_records(cfg)
    plan, params = load_training_plan(cfg, records)
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by "
                         f"the number of processes ({world})")
    spec = ChipStreamSpec(
        batch_size=cfg.SOLVER.IMS_PER_BATCH // world, rank=comm.get_rank(), world_size=world,
        start_iter=start_iter, negatives_per_image=cfg.SNIPER.NEG.CHIPS_PER_IMAGE,
        seed=cfg.SNIPER.PLAN.SEED,
    )
    n_pos = int((~plan.is_negative).sum())
    logger.info(f"chip training: {len(records)} images, {n_pos} positive and "
                f"{int(plan.is_negative.sum())} negative chips over {cfg.SNIPER.PLAN.EPOCHS} planned "
                f"epochs, {spec.batch_size} chips per iteration per process, starting at iteration {start_iter}")
    return build_chip_train_loader(plan, dicts, params.valid_ranges, mapper, spec,
                                   num_workers=cfg.DATALOADER.NUM_WORKERS)


class ResumableTrainLoader:
    """A training loader whose first iteration is decided after it is handed to the trainer.

    detectron2's ``DefaultTrainer`` builds its loader in its constructor, before ``resume_or_load``
    reads from the checkpoint the iteration to resume at. This iterable builds the real loader
    (``build(start_iter)``, e.g. :func:`build_sniper_train_loader`) only when the first batch is
    asked for, at the iteration given to :meth:`start_at` (0 by default), so a resumed run continues
    the exact chip sequence of the interrupted one. Taking an iterator (``iter``) builds nothing.

    Args:
        build (callable): ``build(start_iter) -> iterable of batches``.
    """

    def __init__(self, build):
        self._build = build
        self.start_iter = 0
        self._started = False

    def start_at(self, start_iter):
        """Start at iteration ``start_iter``; only before the first batch was asked for."""
        if self._started:
            raise RuntimeError("the training loader already runs: start_at() must come before the first batch")
        self.start_iter = int(start_iter)

    def __iter__(self):
        return self._batches()

    def _batches(self):
        self._started = True
        yield from self._build(self.start_iter)
