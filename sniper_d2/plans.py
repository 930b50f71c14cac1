"""Chip plans: every training chip of a data set, for E epochs and all scales. Numpy only.

A plan is computed once (in worker processes, with a progress bar), saved as one versioned ``.npz``
written atomically (format ``sniper_d2.chip_plan``, version 1), and reloaded by training as long as
its *config hash* (chip parameters, epochs, seed, proposals) and *data set hash* (image ids, sizes,
boxes, crowd flags) match; otherwise it is rebuilt and the reason is logged.

Seeds: the chips of (epoch e, image i, scale s) use ``default_rng([seed, e, i, s])`` (negatives
``[seed, e, i, s, 1]``), so they do not depend on the number of workers or the order of work.

Negative chips: the plan stores, per epoch, image and scale, *all* negative chips the proposals
support (``is_negative`` True); sampling ``SNIPER.NEG.CHIPS_PER_IMAGE`` of them per epoch is the
training data set's job (:func:`sniper_d2.data.chip_dataset.epoch_chip_indices`). Images without
annotations get no positive chips, and negative chips only where proposals exist.
"""

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context

import numpy as np

from .chips import negative_chips, off_object_proposals, positive_chips, resolve_scale
from .coco import crowd_flags, non_crowd_boxes, sanitize_boxes
from .config import ConfigError, is_fit, parse_scales
from .io import ArtifactError, load_npz_artifact, save_npz_artifact, stable_hash

__all__ = ["PlanParams", "ChipPlan", "plan_image", "build_plan", "save_plan", "load_plan",
           "load_or_build_plan", "dataset_hash", "proposals_digest", "plan_config_hash",
           "PLAN_FORMAT", "PLAN_VERSION"]

logger = logging.getLogger(__name__)

PLAN_FORMAT = "sniper_d2.chip_plan"
PLAN_VERSION = 1
# Fewer images than this are planned in the calling process: a pool would cost more than it saves.
_MIN_IMAGES_PER_POOL = 16


@dataclass(frozen=True)
class PlanParams:
    """What decides the chips: the ``cfg.SNIPER`` keys the planner reads.

    Attributes:
        scales (tuple[float]): per pyramid level, a resize factor or -1 (``FIT_SCALE``: the long
            side fit to ``chip_size``).
        valid_ranges (tuple[ValidRange]): per level, sqrt(w*h) in original pixels (config pairs
            ``(lo, hi)``, hi -1 = no upper bound, are parsed by :func:`sniper_d2.config.parse_scales`).
        chip_size (int), stride (int): chip side and grid step, in scaled pixels.
        neg_min_proposals (tuple[int]): per level, the fewest proposals a negative chip must hold
            (empty: 1 everywhere).
        neg_chips_per_image (int): negative chips sampled per image per epoch by the training data
            set; carried for it, not used to plan (and not part of :meth:`hash`).
    """

    scales: tuple
    valid_ranges: tuple
    chip_size: int
    stride: int
    neg_min_proposals: tuple = ()
    neg_chips_per_image: int = 2

    def __post_init__(self):
        scales, valid_ranges = parse_scales(self.scales, self.valid_ranges, "SNIPER")
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "valid_ranges", valid_ranges)
        if self.neg_min_proposals and len(self.neg_min_proposals) != len(self.scales):
            raise ConfigError(f"SNIPER.NEG.MIN_PROPOSALS has {len(self.neg_min_proposals)} entries for "
                             f"{len(self.scales)} scales: give one per scale")
        if self.chip_size <= 0 or self.stride <= 0:
            raise ConfigError(f"SNIPER.CHIP_SIZE ({self.chip_size}) and SNIPER.CHIP_STRIDE "
                             f"({self.stride}) must be positive")

    @classmethod
    def from_cfg(cls, cfg):
        """From a detectron2 ``CfgNode`` holding ``cfg.SNIPER`` (or any object with the same attributes)."""
        s = cfg.SNIPER
        return cls(scales=s.SCALES, valid_ranges=s.VALID_RANGES,
                   chip_size=int(s.CHIP_SIZE), stride=int(s.CHIP_STRIDE),
                   neg_min_proposals=tuple(int(x) for x in s.NEG.MIN_PROPOSALS),
                   neg_chips_per_image=int(s.NEG.CHIPS_PER_IMAGE))

    def planning_dict(self):
        """The fields that change the chips, JSON-ready (hi = -1 for no upper bound)."""
        return {"scales": [float(s) for s in self.scales],
                "valid_ranges": [list(r.to_cfg()) for r in self.valid_ranges],
                "chip_size": int(self.chip_size), "stride": int(self.stride),
                "neg_min_proposals": [int(m) for m in self.min_proposals()],
                # Planner revision: negatives use only proposals in their scale's valid range that
                # lie mostly off the objects. Plans written before (without this key) are rebuilt.
                "negatives_from": "off_object_proposals_in_valid_range"}

    def min_proposals(self):
        return tuple(self.neg_min_proposals) if self.neg_min_proposals else (1,) * len(self.scales)

    def hash(self):
        return stable_hash(self.planning_dict())


@dataclass
class ChipPlan:
    """All chips (M) of all planned epochs, grouped by epoch.

    Attributes:
        epoch (M,) int32; image_index (M,) int32 (index into the records list);
        scale_index (M,) int32 (index into ``SNIPER.SCALES``); scale (M,) float32 (the factor
        actually applied, FIT_SCALE resolved per image); chips (M, 4) float32 XYXY in original
        pixels; is_negative (M,) bool; epochs (int); config_hash, dataset_hash (str).
    """

    epoch: np.ndarray
    image_index: np.ndarray
    scale_index: np.ndarray
    scale: np.ndarray
    chips: np.ndarray
    is_negative: np.ndarray
    epochs: int
    config_hash: str
    dataset_hash: str

    def __len__(self):
        return len(self.chips)

    def chips_per_image(self, num_images, num_scales):
        """(num_scales, 2) float: mean (positive, negative) chips per image per epoch at each scale."""
        key = self.scale_index.astype(np.int64) * 2 + self.is_negative
        counts = np.bincount(key, minlength=2 * num_scales)[: 2 * num_scales]
        return counts.reshape(num_scales, 2) / max(1, self.epochs * num_images)

    def summary(self, num_images, scales=None):
        """Text: per scale, mean positive and negative chips per image per epoch."""
        num_scales = len(scales) if scales is not None else int(self.scale_index.max(initial=-1)) + 1
        per = self.chips_per_image(num_images, num_scales)
        lines = [f"{len(self)} chips, {num_images} images, {self.epochs} epochs"]
        for s in range(num_scales):
            name = f"scale #{s}"
            if scales is not None:
                name += " (fit)" if is_fit(scales[s]) else f" ({float(scales[s]):g}x)"
            lines.append(f"  {name}: {per[s, 0]:.2f} positive, {per[s, 1]:.2f} negative chips per image per epoch")
        return "\n".join(lines)


def dataset_hash(records):
    """Digest of what the planner reads from a data set: ids, sizes, boxes, crowd flags."""
    h = hashlib.sha1()
    for r in records:
        boxes = np.ascontiguousarray(r["boxes"], np.float32).reshape(-1, 4)
        h.update(str(r["image_id"]).encode("utf-8"))
        h.update(np.asarray([r["height"], r["width"], len(boxes)], np.int64).tobytes())
        h.update(boxes.tobytes())
        h.update(np.ascontiguousarray(crowd_flags(r), bool).tobytes())
    return h.hexdigest()[:16]


def proposals_digest(proposals):
    """Digest of a proposals dict (image_id -> list over scales of (P, 4) boxes); "" for None."""
    if proposals is None:
        return ""
    h = hashlib.sha1()
    for image_id in sorted(proposals, key=str):
        h.update(str(image_id).encode("utf-8"))
        for s, boxes in enumerate(proposals[image_id] or ()):
            b = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
            h.update(np.asarray([s, len(b)], np.int64).tobytes())
            h.update(np.ascontiguousarray(b).tobytes())
    return h.hexdigest()[:16]


def plan_config_hash(params, epochs, seed, proposals_id=""):
    """Digest of everything but the data that decides a plan."""
    return stable_hash({"params": params.hash(), "epochs": int(epochs), "seed": int(seed),
                        "proposals": proposals_id})


def plan_image(image_size, boxes, index, params, epochs, seed, proposals=None):
    """All chips of one image, every epoch and scale.

    Args:
        image_size (tuple[int, int]): (height, width).
        boxes: (N, 4) float32 XYXY original pixels, the boxes to cover (crowd boxes left out).
        index (int): the image's index in the records (part of the seeds).
        params (PlanParams), epochs (int), seed (int): see :func:`build_plan`.
        proposals: None, or a list over scale index of (P, 4) proposal boxes (or None).

    Returns:
        list of (epoch, scale_index, scale, (K, 4) float32 chips, is_negative) tuples.
    """
    out = []
    min_props = params.min_proposals()
    for s, (entry, valid_range) in enumerate(zip(params.scales, params.valid_ranges)):
        scale = resolve_scale(entry, image_size, params.chip_size)
        props = None if proposals is None or s >= len(proposals) else proposals[s]
        if props is not None and len(props):
            props = np.asarray(props, np.float32).reshape(-1, 4)
            props = props[off_object_proposals(props, boxes)]  # parts of objects are no clutter
        for e in range(epochs):
            pos = positive_chips(boxes, image_size, scale, valid_range, params.chip_size, params.stride,
                                 seed=[seed, e, index, s])
            out.append((e, s, scale, pos, False))
            if props is not None and len(props):
                neg = negative_chips(props, image_size, scale, params.chip_size, params.stride, pos,
                                     min_props[s], seed=[seed, e, index, s, 1], valid_range=valid_range)
                out.append((e, s, scale, neg, True))
    return out


def _plan_job(job):
    return plan_image(*job)


def _jobs(records, params, epochs, seed, proposals, dropped):
    """Per image: clean boxes and proposals once (counting drops in ``dropped``), then the job."""
    for i, r in enumerate(records):
        size = (r["height"], r["width"])
        boxes = non_crowd_boxes(r)
        boxes, keep, counts = sanitize_boxes(boxes, size)
        dropped.update({"boxes " + k: v for k, v in counts.items()})
        props = proposals.get(r["image_id"]) if proposals else None
        if props is not None:
            cleaned = []
            for p in props:
                if p is None:
                    cleaned.append(None)
                    continue
                p, keep_p, counts = sanitize_boxes(p, size)
                dropped.update({"proposals " + k: v for k, v in counts.items()})
                cleaned.append(p[keep_p])
            props = cleaned
        yield size, boxes[keep], i, params, epochs, seed, props


def build_plan(records, params, epochs, seed, num_workers=0, proposals=None, proposals_id=None,
               progress=True):
    """Plan every image of a data set for ``epochs`` epochs at all scales.

    Args:
        records (list[dict]): see :func:`sniper_d2.coco.load_coco_records` (``boxes`` (N, 4)
            float32 XYXY original pixels, ``height``, ``width``, ``image_id``, ``iscrowd``).
        params (PlanParams): chip parameters.
        epochs (int): epochs to plan (one seed per epoch). seed (int): base seed.
        num_workers (int): worker processes (0 = this process; data sets of fewer than 16 images
            are always planned in this process).
        proposals (dict or None): image_id -> list over scale index of (P, 4) float32 proposal boxes
            (original pixels), for negative chips; images missing from it get none.
        proposals_id (str or None): identifies the proposals in the config hash; None = a digest of
            ``proposals`` (see :func:`proposals_digest`).
        progress (bool): show a tqdm bar.

    Returns:
        ChipPlan
    """
    from tqdm import tqdm

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if proposals_id is None:
        proposals_id = proposals_digest(proposals)
    dropped = Counter()
    jobs = _jobs(records, params, epochs, seed, proposals, dropped)
    bar = dict(total=len(records), desc="planning chips", unit="img", disable=not progress)
    if num_workers > 0 and len(records) >= _MIN_IMAGES_PER_POOL:
        chunk = max(1, min(64, len(records) // (8 * num_workers)))
        # Workers run numpy only, so forking (as torch's DataLoader does) is safe and starts in
        # milliseconds; "spawn" would re-import the caller's main module (torch, detectron2) per worker.
        method = "fork" if "fork" in get_all_start_methods() else "spawn"
        with get_context(method).Pool(num_workers) as pool:
            results = list(tqdm(pool.imap(_plan_job, jobs, chunksize=chunk), **bar))
    else:
        results = [_plan_job(j) for j in tqdm(jobs, **bar)]

    if dropped:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(dropped.items()))
        logger.warning(f"planning: dropped or clipped {detail}")
    columns = [[] for _ in range(6)]
    for i, image_rows in enumerate(results):
        for e, s, scale, chips, neg in image_rows:
            k = len(chips)
            for col, value in zip(columns, (np.full(k, e, np.int32), np.full(k, i, np.int32),
                                            np.full(k, s, np.int32), np.full(k, scale, np.float32),
                                            chips.reshape(-1, 4), np.full(k, neg, bool))):
                col.append(value)
    empty = (np.int32, np.int32, np.int32, np.float32, np.float32, bool)
    cat = [np.concatenate(col) if col else np.zeros((0, 4) if j == 4 else 0, empty[j])
           for j, col in enumerate(columns)]
    order = np.argsort(cat[0], kind="stable")  # group by epoch; image order inside
    cat = [c[order] for c in cat]
    return ChipPlan(
        epoch=cat[0], image_index=cat[1], scale_index=cat[2], scale=cat[3],
        chips=cat[4].astype(np.float32).reshape(-1, 4), is_negative=cat[5],
        epochs=int(epochs), config_hash=plan_config_hash(params, epochs, seed, proposals_id),
        dataset_hash=dataset_hash(records))


_ARRAYS = ("epoch", "image_index", "scale_index", "scale", "chips", "is_negative")


def save_plan(path, plan, params=None, seed=None):
    """Write a plan atomically (format ``sniper_d2.chip_plan``, version 1).

    ``params`` and ``seed``, when given, are stored in the header for humans and for the rebuild
    reasons of :func:`load_or_build_plan`.
    """
    header = {"epochs": plan.epochs, "config_hash": plan.config_hash, "dataset_hash": plan.dataset_hash,
              "num_chips": len(plan)}
    if params is not None:
        header["params"] = params.planning_dict()
    if seed is not None:
        header["seed"] = int(seed)
    save_npz_artifact(path, PLAN_FORMAT, PLAN_VERSION, header, {k: getattr(plan, k) for k in _ARRAYS})


def _read_plan(path):
    header, arrays = load_npz_artifact(path, PLAN_FORMAT, PLAN_VERSION)
    missing = [k for k in _ARRAYS if k not in arrays]
    missing += [k for k in ("epochs", "config_hash", "dataset_hash", "num_chips") if k not in header]
    if missing:
        raise ArtifactError(f"{path}: chip plan lacks {missing}: the file is damaged")
    lengths = {k: len(arrays[k]) for k in _ARRAYS}
    if len(set(lengths.values())) != 1 or lengths["chips"] != header["num_chips"]:
        raise ArtifactError(f"{path}: chip plan arrays disagree in length ({lengths}, header says "
                            f"{header['num_chips']}): the file is damaged")
    plan = ChipPlan(epochs=int(header["epochs"]), config_hash=header["config_hash"],
                    dataset_hash=header["dataset_hash"],
                    **{k: arrays[k].reshape(-1, 4) if k == "chips" else arrays[k] for k in _ARRAYS})
    return header, plan


def load_plan(path):
    """Read a plan.

    Raises:
        ArtifactError: the file is missing, truncated, of another format or version, or inconsistent.
    """
    return _read_plan(path)[1]


def _mismatch_reason(header, params, epochs, seed, want_config, want_data):
    if header["dataset_hash"] != want_data:
        return f"it was made for another data set (data set hash {header['dataset_hash']} != {want_data})"
    reasons = []
    old = header.get("params")
    if old is not None:
        new = params.planning_dict()
        reasons += [f"{k} {old.get(k)} -> {new[k]}" for k in new if old.get(k) != new[k]]
    if header["epochs"] != epochs:
        reasons.append(f"epochs {header['epochs']} -> {epochs}")
    if "seed" in header and header["seed"] != seed:
        reasons.append(f"seed {header['seed']} -> {seed}")
    detail = "; ".join(reasons) if reasons else "the proposals or another planning input changed"
    return f"it was made with other settings ({detail}; config hash {header['config_hash']} != {want_config})"


def load_or_build_plan(path, records, params, epochs, seed, num_workers=0, proposals=None,
                       proposals_id=None, progress=True):
    """The plan at ``path`` if it matches (config, data, epochs, seed, proposals); else build and save it.

    A missing, damaged or stale file is rebuilt (atomically replaced) and the reason logged.
    Arguments as in :func:`build_plan`.

    Returns:
        ChipPlan
    """
    path = os.fspath(path)
    if proposals_id is None:
        proposals_id = proposals_digest(proposals)
    want_config = plan_config_hash(params, epochs, seed, proposals_id)
    want_data = dataset_hash(records)
    if os.path.exists(path):
        try:
            header, plan = _read_plan(path)
        except ArtifactError as e:
            logger.warning(f"rebuilding the chip plan: {e}")
        else:
            if plan.config_hash == want_config and plan.dataset_hash == want_data:
                logger.info(f"loaded chip plan {path}: {len(plan)} chips, {plan.epochs} epochs")
                return plan
            reason = _mismatch_reason(header, params, epochs, seed, want_config, want_data)
            logger.warning(f"rebuilding the chip plan {path}: {reason}")
    else:
        logger.info(f"no chip plan at {path}: building it")
    plan = build_plan(records, params, epochs, seed, num_workers=num_workers, proposals=proposals,
                      proposals_id=proposals_id, progress=progress)
    save_plan(path, plan, params=params, seed=seed)
    logger.info(f"saved chip plan {path}: {len(plan)} chips over {epochs} epochs")
    return plan
