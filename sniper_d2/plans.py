"""Chip plans: every training chip of a data set, for E epochs and all scales. Numpy only.

A plan is computed once (images in chunks planned together, optionally in worker processes or
shared among training processes, with a progress bar), saved as one versioned ``.npz``
written atomically (format ``sniper_d2.chip_plan``, version 1), and reloaded by training as long as
its *config hash* (chip parameters, epochs, seed, proposals) and *data set hash* (image ids, sizes,
boxes, crowd flags) match; otherwise it is rebuilt and the reason is logged.

Seeds: the chips of (epoch e, image i, scale s) use the seed ``[seed, e, i, s]`` (negatives
``[seed, e, i, s, 1]``), so they do not depend on the number of workers or processes, on which
images are planned together, or on the order of work.

Plan modes (``SNIPER.PLAN.MODE``): "sniper" plans the chips above; "sliced" plans every tile of a
regular grid instead (:func:`slice_images`: plain slicing, the baseline practitioners use), through
the same file, loader and mapper.

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

from .chips import (batch_negative_chips, batch_positive_chips, in_valid_range, off_object_proposals,
                    resolve_scale)
from .coco import crowd_flags, non_crowd_boxes, sanitize_boxes
from .config_types import ConfigError, ValidRange, is_fit, parse_scales
from .io import ArtifactError, load_npz_artifact, save_npz_artifact, stable_hash

__all__ = ["PlanParams", "ChipPlan", "PLAN_MODES", "plan_images", "slice_images", "build_plan", "merge_plans",
           "save_plan", "load_plan", "load_matching_plan", "load_or_build_plan", "clean_record_inputs", "dataset_hash",
           "proposals_digest",
           "plan_config_hash", "PLAN_FORMAT", "PLAN_VERSION"]

logger = logging.getLogger(__name__)

PLAN_FORMAT = "sniper_d2.chip_plan"
PLAN_VERSION = 1
# SNIPER.PLAN.MODE values: SNIPER's positive / negative chips, or every tile of a grid (slicing).
PLAN_MODES = ("sniper", "sliced")
# Fewer images than this are planned in the calling process: a pool would cost more than it saves.
_MIN_IMAGES_PER_POOL = 16
# Images planned in one call (plan_images): at most this many, and padded greedy score arrays of at
# most about this many cells (float32, 32 MB), so that a call's numpy work is large but its memory bounded.
_MAX_IMAGES_PER_CHUNK = 256
_CELLS_PER_CHUNK = 1 << 23


@dataclass(frozen=True)
class PlanParams:
    """What decides the chips: the ``cfg.SNIPER`` keys the planner reads.

    Attributes:
        scales (tuple[float]): per pyramid level, a resize factor or -1 (``FIT_SCALE``: the long
            side fit to ``chip_size``).
        valid_ranges (tuple[ValidRange]): per level, sqrt(w*h) in original pixels (config pairs
            ``(lo, hi)``, hi -1 = no upper bound, are parsed by :func:`sniper_d2.config_types.parse_scales`).
        chip_size (int), stride (int): chip side and grid step, in scaled pixels.
        neg_min_proposals (tuple[int]): per level, the fewest proposals a negative chip must hold
            (empty: 1 everywhere).
        neg_chips_per_image (int): negative chips sampled per image per epoch by the training data
            set; carried for it, not used to plan (and not part of :meth:`hash`).
        mode (str): ``"sniper"`` or ``"sliced"`` (every grid tile; then every valid range is
            ``[0, inf)``: every object is valid at every scale, whatever the config's ranges).
        slice_overlap (float): ``"sliced"``: overlap of neighbouring tiles, fraction of ``chip_size``.
    """

    scales: tuple
    valid_ranges: tuple
    chip_size: int
    stride: int
    neg_min_proposals: tuple = ()
    neg_chips_per_image: int = 2
    mode: str = "sniper"
    slice_overlap: float = 0.2

    def __post_init__(self):
        if self.mode not in PLAN_MODES:
            raise ConfigError(f"SNIPER.PLAN.MODE {self.mode!r} is not one of {list(PLAN_MODES)}")
        if not 0 <= float(self.slice_overlap) < 1:
            raise ConfigError(f"SNIPER.PLAN.SLICE_OVERLAP {self.slice_overlap} must be in [0, 1) (a fraction of "
                              f"CHIP_SIZE)")
        scales, valid_ranges = parse_scales(self.scales, self.valid_ranges, "SNIPER")
        if self.mode == "sliced":
            valid_ranges = tuple(ValidRange(0.0) for _ in scales)  # slicing: every size is a positive
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
                   neg_chips_per_image=int(s.NEG.CHIPS_PER_IMAGE),
                   mode=str(getattr(s.PLAN, "MODE", "sniper")),
                   slice_overlap=float(getattr(s.PLAN, "SLICE_OVERLAP", 0.2)))

    def planning_dict(self):
        """The fields that change the chips, JSON-ready (hi = -1 for no upper bound)."""
        if self.mode == "sliced":  # (SNIPER plans keep the keys, and so the hashes, they had before)
            return {"mode": "sliced", "scales": [float(s) for s in self.scales], "chip_size": int(self.chip_size),
                    "slice_overlap": float(self.slice_overlap)}
        return {"scales": [float(s) for s in self.scales],
                "valid_ranges": [list(r.to_cfg()) for r in self.valid_ranges],
                "chip_size": int(self.chip_size), "stride": int(self.stride),
                "neg_min_proposals": [int(m) for m in self.min_proposals()],
                # Planner revision: negatives use only proposals in their scale's valid range that
                # lie mostly off the objects. Plans written before (without this key) are rebuilt.
                "negatives_from": "off_object_proposals_in_valid_range",
                # Seeded tie-breaks and placement of the batched planner (issue 14): other chips
                # for the same seed than before, so older plans are rebuilt.
                "seeded_choices": "hashed_priority_and_uniform_placement"}

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


def plan_images(jobs, params, epochs, seed):
    """All chips of some images, every epoch and scale, planned together.

    All (image, scale, epoch) covers run in one call of :func:`sniper_d2.chips.batch_positive_chips`
    (and one of ``batch_negative_chips``), so a small image costs little more than its share of
    the numpy work. The chips of (epoch e, image i, scale s) use seed ``[seed, e, i, s]``
    (negatives ``[seed, e, i, s, 1]``) and do not depend on which images are planned together.

    Args:
        jobs (list): per image, ``(image_size, boxes, index, proposals)``: (height, width); (N, 4)
            float32 XYXY original pixels, the boxes to cover, clean (crowd boxes left out); the
            image's index in the records; None or a list over scale index of clean (P, 4)
            proposal boxes (or None).
        params (PlanParams), epochs (int), seed (int): see :func:`build_plan`.

    Returns:
        dict of (M,) columns ``image_index``, ``epoch``, ``scale_index`` (int32), ``scale``
        (float32), ``chips`` (M, 4) float32 and ``is_negative`` (bool), ordered by image (as in
        ``jobs``), scale, epoch, positives first, then greedy order.
    """
    if params.mode == "sliced":
        return slice_images(jobs, params, epochs)
    num_scales = len(params.scales)
    sizes = np.asarray([j[0] for j in jobs], np.float64).reshape(-1, 2)
    index = np.asarray([j[2] for j in jobs], np.int64)
    scales = np.stack([np.broadcast_to(resolve_scale(entry, (sizes[:, 0], sizes[:, 1]), params.chip_size),
                                       len(jobs)) for entry in params.scales], axis=1).astype(np.float64)

    def problems(boxes, image, valid, e=np.arange(epochs)):
        """Covers of the (image, scale) pairs with a valid box, one per epoch of ``e``: box rows,
        problem of each row, and per problem (image, scale index, epoch)."""
        b, s = np.nonzero(valid)
        pair, pair_of_box = np.unique(image[b] * num_scales + s, return_inverse=True)
        num_e = len(e)
        rows = np.repeat(b, num_e)
        problem = (np.repeat(pair_of_box, num_e) * num_e + np.tile(np.arange(num_e), len(b)))
        img, sc = np.repeat(pair // num_scales, num_e), np.repeat(pair % num_scales, num_e)
        return boxes[rows], problem, (img, sc, np.tile(e, len(pair)))

    def seeds(img, sc, ep, *extra):
        return np.stack([np.full(len(img), seed), ep, index[img], sc] + [np.full(len(img), x) for x in extra], 1)

    boxes = np.concatenate([j[1] for j in jobs] + [np.zeros((0, 4), np.float32)]).astype(np.float32)
    image = np.repeat(np.arange(len(jobs)), [len(j[1]) for j in jobs])
    valid = np.stack([in_valid_range(boxes, vr) for vr in params.valid_ranges], axis=1)
    pos = []
    for s in range(num_scales):  # one call per scale: the covers of a call are padded to its largest
        only_s = np.zeros_like(valid)
        only_s[:, s] = valid[:, s]
        # A large image (an orthomosaic) has large score arrays: fewer epochs per call then.
        count = np.bincount(image[valid[:, s]], minlength=len(jobs))
        cells = len(jobs) * _cover_cells(count, sizes, scales[:, s], params.stride).max(initial=1)
        for group in _epoch_groups(epochs, cells):
            rows, problem, (img, sc, ep) = problems(boxes, image, only_s, group)
            p, chips = batch_positive_chips(rows, problem, sizes[img], scales[img, sc], params.chip_size,
                                            params.stride, seeds(img, sc, ep))
            pos.append((img[p], sc[p], ep[p], chips))
    img, sc, ep, pos_chips = (np.concatenate(c) for c in zip(*pos))
    out = [(img, sc, ep, pos_chips, np.zeros(len(img), bool))]

    # Negatives: proposals mostly off the objects (parts of objects are no clutter), in range.
    props, prop_image, prop_valid = [], [], []
    for i, job in enumerate(jobs):
        for s, p in enumerate(job[3] or ()):
            if p is None or not len(p) or s >= num_scales:
                continue
            p = p[off_object_proposals(p, job[1])]
            props.append(p)
            prop_image.append(np.full(len(p), i))
            prop_valid.append(np.zeros((len(p), num_scales), bool))
            prop_valid[-1][:, s] = in_valid_range(p, params.valid_ranges[s])
    if props:
        rows, problem, (nimg, nsc, nep) = problems(np.concatenate(props), np.concatenate(prop_image),
                                                   np.concatenate(prop_valid))
        # The positive chips of the same (image, scale, epoch), numbered as the negative problems.
        neg_key = (nimg * num_scales + nsc) * epochs + nep
        pos_key = (img * num_scales + sc) * epochs + ep
        at = np.minimum(np.searchsorted(neg_key, pos_key), max(len(neg_key) - 1, 0))
        same = neg_key[at] == pos_key if len(neg_key) else np.zeros(len(pos_key), bool)
        min_props = np.asarray(params.min_proposals(), np.int64)[nsc]
        neg_p, neg_chips = batch_negative_chips(rows, problem, sizes[nimg], scales[nimg, nsc], params.chip_size,
                                                params.stride, (at[same], pos_chips[same]), min_props,
                                                seeds(nimg, nsc, nep, 1))
        out.append((nimg[neg_p], nsc[neg_p], nep[neg_p], neg_chips, np.ones(len(neg_p), bool)))

    img, sc, ep, chips, neg = (np.concatenate(c) for c in zip(*out))
    order = np.argsort(((img * num_scales + sc) * epochs + ep) * 2 + neg, kind="stable")
    return {"image_index": index[img][order].astype(np.int32), "epoch": ep[order].astype(np.int32),
            "scale_index": sc[order].astype(np.int32), "scale": scales[img, sc][order].astype(np.float32),
            "chips": chips[order].astype(np.float32).reshape(-1, 4), "is_negative": neg[order]}


def slice_images(jobs, params, epochs):
    """Plain slicing: every tile of a regular grid, at every scale, in every epoch.

    At scale ``s`` the image is ``scaled_length`` of (H, W) (half up) scaled pixels, cut into the windows
    of
    :func:`sniper_d2.geometry.tile_windows` (``CHIP_SIZE`` square, neighbours overlapping by at least
    ``round(slice_overlap * CHIP_SIZE)`` scaled pixels, the last window of a row or column shifted
    inward to end at the border; a side shorter than a chip gives one window as long as the side),
    mapped back to original pixels; a window ending at the scaled border ends at the original
    border, so the tiles of every scale cover the whole image. Background tiles are kept (no
    ``is_negative`` chip: every tile is trained every epoch, in the order the data set draws).

    Args and Returns: as :func:`plan_images` (the proposals in ``jobs`` are not used).
    """
    from .geometry import scaled_length, tile_windows  # cv2: imported when slicing is planned only

    overlap = int(round(params.slice_overlap * params.chip_size))
    parts = []
    for job in jobs:
        (h, w), index = job[0], job[2]
        for s, entry in enumerate(params.scales):
            scale = float(resolve_scale(entry, (h, w), params.chip_size))
            scaled = (max(1, scaled_length(h, scale)), max(1, scaled_length(w, scale)))
            win = tile_windows(scaled, params.chip_size, overlap).astype(np.float64)
            chips = win / scale
            ends = win[:, 2:] >= np.asarray(scaled[::-1], np.float64)  # windows ending at the border
            chips[:, 2:] = np.where(ends, np.asarray([w, h], np.float64), np.minimum(chips[:, 2:], [w, h]))
            parts.append((index, s, scale, chips))
    image, scale_index, scale = (np.asarray([p[k] for p in parts], np.float64).reshape(-1) for k in range(3))
    per = np.repeat(np.asarray([len(p[3]) for p in parts], np.int64), epochs)  # rows per (image, scale, epoch)
    group = np.repeat(np.arange(len(parts)), epochs)
    chips = np.concatenate([np.tile(p[3], (epochs, 1)) for p in parts] + [np.zeros((0, 4))])
    return {"image_index": np.repeat(image[group], per).astype(np.int32),
            "epoch": np.repeat(np.tile(np.arange(epochs), len(parts)), per).astype(np.int32),
            "scale_index": np.repeat(scale_index[group], per).astype(np.int32),
            "scale": np.repeat(scale[group], per).astype(np.float32),
            "chips": chips.astype(np.float32).reshape(-1, 4), "is_negative": np.zeros(len(chips), bool)}


def _cover_cells(num_boxes, sizes, scales, stride):
    """(I,) float: about how many cells the greedy's score array of one cover holds: the compressed
    grid (at most boxes x boxes cells, never more than the grid of chip positions).

    Args:
        num_boxes: (I,) boxes to cover per image. sizes: (I, 2) (height, width) original pixels.
        scales: (I,) resize factors. stride (int): grid step in scaled pixels.
    """
    grid = (sizes[:, 0] * scales / stride + 3) * (sizes[:, 1] * scales / stride + 3)
    return np.minimum((np.asarray(num_boxes, np.float64) + 1) ** 2, grid)


def _epoch_groups(epochs, cells_per_epoch):
    """Epochs covered in one call (as ranges of epoch numbers): score arrays of about
    ``_CELLS_PER_CHUNK`` cells at most, all epochs at once when they fit."""
    size = int(max(1, min(epochs, _CELLS_PER_CHUNK // max(1.0, float(cells_per_epoch)))))
    return [np.arange(e, min(e + size, epochs)) for e in range(0, epochs, size)]


def _plan_chunk(job):
    chunk, params, epochs, seed = job
    return plan_images(chunk, params, epochs, seed)


def _sanitized(boxes, image_size, kind, dropped):
    """``boxes`` (N, 4) XYXY original pixels clipped to the image, unusable ones dropped; what was
    dropped or clipped is counted in ``dropped`` (a Counter, keys prefixed by ``kind``) unless None."""
    boxes, keep, counts = sanitize_boxes(boxes, image_size)
    if dropped is not None:
        dropped.update({f"{kind} {k}": v for k, v in counts.items()})
    return boxes[keep]


def clean_record_inputs(record, proposals=None, dropped=None):
    """One record's planner inputs, cleaned once: ``(image_size, boxes, proposals)``.

    Args:
        record (dict): a planner record (``height``, ``width``, ``image_id``, ``boxes`` (N, 4) XYXY
            original pixels, optional ``iscrowd``).
        proposals (dict or None): image_id -> list over scales of (P, 4) XYXY original pixels or None.
        dropped (Counter or None): receives the counts of dropped / clipped boxes and proposals.

    Returns:
        image_size (H, W); boxes (K, 4) float32 without crowd and unusable boxes, clipped;
        proposals: None or the image's list over scales, each cleaned the same way (None kept).
    """
    size = (record["height"], record["width"])
    boxes = _sanitized(non_crowd_boxes(record), size, "boxes", dropped)
    props = proposals.get(record["image_id"]) if proposals else None
    if props is not None:
        props = [None if p is None else _sanitized(p, size, "proposals", dropped) for p in props]
    return size, boxes, props


def _clean_inputs(records, indices, proposals, dropped):
    """Per image of ``indices``: ``(image_size, boxes, index, proposals)`` from
    :func:`clean_record_inputs`, counting what was dropped or clipped in ``dropped``."""
    jobs = []
    for i in indices:
        size, boxes, props = clean_record_inputs(records[i], proposals, dropped)
        jobs.append((size, boxes, i, props))
    return jobs


def _chunks(jobs, params, epochs, workers):
    """Groups of images planned in one call: images of similar cost together (the covers of a
    call are padded to its largest), each group's padded score arrays about ``_CELLS_PER_CHUNK``
    cells at most, and at most ``_MAX_IMAGES_PER_CHUNK`` images (fewer with ``workers`` processes,
    so that each gets several groups)."""
    cells, max_images = _CELLS_PER_CHUNK, _MAX_IMAGES_PER_CHUNK
    if workers > 0:
        max_images = min(max_images, max(16, -(-len(jobs) // (4 * workers))))
    sizes = np.asarray([j[0] for j in jobs], np.float64).reshape(-1, 2)
    boxes = np.asarray([len(j[1]) for j in jobs])
    props = np.asarray([max([len(p) for p in j[3] or () if p is not None], default=0) for j in jobs])
    cost = np.zeros(len(jobs))
    for entry in params.scales:
        scale = np.broadcast_to(resolve_scale(entry, (sizes[:, 0], sizes[:, 1]), params.chip_size), len(jobs))
        cost += epochs * (_cover_cells(boxes, sizes, scale, params.stride)
                          + _cover_cells(props, sizes, scale, params.stride))
    chunks, current = [], []
    for k in np.argsort(cost, kind="stable"):
        if current and ((len(current) + 1) * cost[k] > cells or len(current) >= max_images):
            chunks.append(current)
            current = []
        current.append(jobs[k])
    return chunks + [current] if current else chunks


def build_plan(records, params, epochs, seed, num_workers=0, proposals=None, proposals_id=None,
               progress=True, shard=None):
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
        shard (tuple[int, int] or None): ``(rank, world)``: plan only the images whose index is
            ``rank`` modulo ``world`` (one process's share; :func:`merge_plans` joins the shares
            into the plan of all images). None: all images.

    Returns:
        ChipPlan (``image_index`` indexes ``records`` also when sharded)
    """
    from tqdm import tqdm

    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if proposals_id is None:
        proposals_id = proposals_digest(proposals)
    rank, world = (0, 1) if shard is None else (int(shard[0]), int(shard[1]))
    if not 0 <= rank < world:
        raise ValueError(f"shard {shard} is not a (rank, world) pair with 0 <= rank < world")
    indices = range(rank, len(records), world)
    dropped = Counter()
    pool = num_workers > 0 and len(indices) >= _MIN_IMAGES_PER_POOL
    chunks = _chunks(_clean_inputs(records, indices, proposals, dropped), params, epochs,
                     num_workers if pool else 0)
    jobs = [(c, params, epochs, seed) for c in chunks]
    with tqdm(total=len(indices), desc="planning chips", unit="img", disable=not progress) as bar:
        if pool:
            # Workers run numpy only, so forking (as torch's DataLoader does) is safe and starts in
            # milliseconds; "spawn" would re-import the caller's main module (torch, detectron2) per worker.
            method = "fork" if "fork" in get_all_start_methods() else "spawn"
            with get_context(method).Pool(num_workers) as pool:
                results = []
                for job, result in zip(jobs, pool.imap(_plan_chunk, jobs)):
                    results.append(result)
                    bar.update(len(job[0]))
        else:
            results = []
            for job in jobs:
                results.append(_plan_chunk(job))
                bar.update(len(job[0]))

    if dropped:
        detail = ", ".join(f"{n} {why}" for why, n in sorted(dropped.items()))
        logger.warning(f"planning: dropped or clipped {detail}")
    return _concatenate(results, epochs, plan_config_hash(params, epochs, seed, proposals_id), dataset_hash(records))


def merge_plans(parts):
    """The plan of all images from the shares of :func:`build_plan` (``shard=(rank, world)``).

    The result equals the plan built in one process: same chips, same order (by epoch, then
    image, then the order of :func:`plan_images`).

    Args:
        parts (list[ChipPlan]): the shares of ranks 0..world-1, of the same data set and settings.

    Raises:
        ValueError: the shares were planned with other settings or data.
    """
    first = parts[0]
    for p in parts[1:]:
        if (p.epochs, p.config_hash, p.dataset_hash) != (first.epochs, first.config_hash, first.dataset_hash):
            raise ValueError(f"chip plan shares disagree: epochs/config/data set hash {p.epochs}/{p.config_hash}/"
                             f"{p.dataset_hash} != {first.epochs}/{first.config_hash}/{first.dataset_hash}")
    # The rows of one (epoch, image) come from one share, already in plan_images order.
    return _concatenate([{k: getattr(p, k) for k in _ARRAYS} for p in parts], first.epochs, first.config_hash,
                        first.dataset_hash)


def _concatenate(results, epochs, config_hash, data_hash):
    """One ChipPlan from the :func:`plan_images` rows of some chunks of images: grouped by epoch,
    then image (stable: the order of :func:`plan_images` within an image)."""
    empty = {"image_index": np.int32, "epoch": np.int32, "scale_index": np.int32, "scale": np.float32,
             "chips": np.float32, "is_negative": bool}
    cols = {k: np.concatenate([r[k] for r in results] + [np.zeros((0, 4) if k == "chips" else 0, t)]).astype(t)
            for k, t in empty.items()}
    order = np.lexsort((cols["image_index"], cols["epoch"]))
    return ChipPlan(epochs=int(epochs), config_hash=config_hash, dataset_hash=data_hash,
                    **{k: v[order] for k, v in cols.items()})


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


def load_matching_plan(path, records, params, epochs, seed, proposals_id):
    """The plan at ``path`` if it matches (config, data, epochs, seed, proposals), else None.

    Logs why a plan must be built (no file, a damaged file, other settings or data).
    ``proposals_id`` as in :func:`build_plan` (:func:`proposals_digest` of the proposals).
    """
    path = os.fspath(path)
    want_config = plan_config_hash(params, epochs, seed, proposals_id)
    want_data = dataset_hash(records)
    if not os.path.exists(path):
        logger.info(f"no chip plan at {path}: building it")
        return None
    try:
        header, plan = _read_plan(path)
    except ArtifactError as e:
        logger.warning(f"rebuilding the chip plan: {e}")
        return None
    if plan.config_hash == want_config and plan.dataset_hash == want_data:
        logger.info(f"loaded chip plan {path}: {len(plan)} chips, {plan.epochs} epochs")
        return plan
    reason = _mismatch_reason(header, params, epochs, seed, want_config, want_data)
    logger.warning(f"rebuilding the chip plan {path}: {reason}")
    return None


def load_or_build_plan(path, records, params, epochs, seed, num_workers=0, proposals=None,
                       proposals_id=None, progress=True):
    """The plan at ``path`` if it matches (config, data, epochs, seed, proposals); else build and save it.

    A missing, damaged or stale file is rebuilt (atomically replaced) and the reason logged.
    Arguments as in :func:`build_plan`. (Several training processes share the work through
    :func:`sniper_d2.data.plan_sharing.load_or_build_plan_distributed`.)

    Returns:
        ChipPlan
    """
    path = os.fspath(path)
    if proposals_id is None:
        proposals_id = proposals_digest(proposals)
    plan = load_matching_plan(path, records, params, epochs, seed, proposals_id)
    if plan is not None:
        return plan
    plan = build_plan(records, params, epochs, seed, num_workers=num_workers, proposals=proposals,
                      proposals_id=proposals_id, progress=progress)
    save_plan(path, plan, params=params, seed=seed)
    logger.info(f"saved chip plan {path}: {len(plan)} chips over {epochs} epochs")
    return plan
