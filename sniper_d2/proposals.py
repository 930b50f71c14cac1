"""Proposal files for negative chip mining: versioned, atomic, resumable. Numpy only.

A proposals file holds, for every training image and SNIPER scale, the top proposals of a weakly
trained detector's RPN, in original-image pixels. It is written by ``tools/dump_proposals.py`` in
parts (one ``.npz`` per batch of finished images, under ``<file>.parts/``), so an interrupted dump
resumes without redoing finished images; the parts are then merged into one file.

Arrays (P proposals over all images and scales):
    image_id (P,) int64, scale_index (P,) int32,
    boxes (P, 4) float32 XYXY in original-image pixels, scores (P,) float32 (objectness logits).
Header: ``images_hash`` (which images: see :func:`sniper_d2.coco.images_hash`), ``scales_hash``
(the SNIPER scales they were computed at) and ``image_ids`` (images covered, including those with
no proposal).
"""

import glob
import logging
import os

import numpy as np

from .coco import images_hash
from .io import ArtifactError, load_npz_artifact, save_npz_artifact, stable_hash

__all__ = ["PROPOSALS_FORMAT", "scales_hash", "save_proposal_part", "finished_image_ids",
           "merge_proposal_parts", "load_proposals", "load_proposals_for_records"]

logger = logging.getLogger(__name__)

PROPOSALS_FORMAT = "sniper_d2.proposals"
PROPOSALS_VERSION = 1
_PART_FORMAT = "sniper_d2.proposals_part"


def scales_hash(scales):
    """Digest of the pyramid scales (config entries, FIT_SCALE included) proposals were made at."""
    return stable_hash([float(s) for s in scales])


def _parts_dir(path):
    return os.fspath(path) + ".parts"


def _arrays(image_ids, scale_index, boxes, scores):
    return {"image_id": np.asarray(image_ids, np.int64).reshape(-1),
            "scale_index": np.asarray(scale_index, np.int32).reshape(-1),
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "scores": np.asarray(scores, np.float32).reshape(-1)}


def save_proposal_part(path, part_name, header, done_image_ids, image_ids, scale_index, boxes, scores):
    """Atomically write one part: the proposals of the images ``done_image_ids``.

    Args:
        path (str): final proposals file; parts go to ``<path>.parts/<part_name>.npz``.
        header (dict): ``images_hash`` and ``scales_hash`` of the whole dump.
        done_image_ids: ids of the images this part completes (some may have no proposal).
        image_ids, scale_index, boxes, scores: one row per proposal (see module docstring).
    """
    arrays = _arrays(image_ids, scale_index, boxes, scores)
    arrays["done_image_ids"] = np.asarray(done_image_ids, np.int64).reshape(-1)
    save_npz_artifact(os.path.join(_parts_dir(path), part_name + ".npz"), _PART_FORMAT,
                      PROPOSALS_VERSION, header, arrays)


def _read_parts(path, header):
    parts = []
    for part in sorted(glob.glob(os.path.join(_parts_dir(path), "*.npz"))):
        part_header, arrays = load_npz_artifact(part, _PART_FORMAT, PROPOSALS_VERSION)
        for key in ("images_hash", "scales_hash"):
            if part_header.get(key) != header[key]:
                raise ArtifactError(f"{part}: left by a dump of another data set or scales ({key} "
                                    f"{part_header.get(key)} != {header[key]}); delete {_parts_dir(path)}")
        parts.append(arrays)
    return parts


def finished_image_ids(path, header):
    """Image ids already dumped by an earlier, interrupted run (read from its parts)."""
    done = [p["done_image_ids"] for p in _read_parts(path, header)]
    return set(np.concatenate(done).tolist()) if done else set()


def merge_proposal_parts(path, header):
    """Merge all parts into the final file (atomic) and remove the parts folder."""
    parts = _read_parts(path, header)
    if not parts:
        raise ArtifactError(f"{_parts_dir(path)}: no proposal parts to merge")
    merged = {k: np.concatenate([p[k] for p in parts]) for k in ("image_id", "scale_index", "boxes", "scores")}
    done = np.unique(np.concatenate([p["done_image_ids"] for p in parts]))
    save_npz_artifact(path, PROPOSALS_FORMAT, PROPOSALS_VERSION, dict(header, image_ids=done.tolist()), merged)
    for part in glob.glob(os.path.join(_parts_dir(path), "*.npz")):
        os.remove(part)
    os.rmdir(_parts_dir(path))
    logger.info(f"wrote {path}: {len(merged['boxes'])} proposals for {len(done)} images")


def load_proposals(path):
    """Read a proposals file: returns (header, arrays)."""
    return load_npz_artifact(path, PROPOSALS_FORMAT, PROPOSALS_VERSION)


def load_proposals_for_records(path, records, scales):
    """Proposals grouped per image and scale, after checking they belong to this data and scales.

    Args:
        path (str): proposals file.
        records (list[dict]): the training records (see :func:`sniper_d2.coco.load_coco_records`).
        scales (sequence of float): the config's SNIPER.SCALES.

    Returns:
        dict image_id -> list over scale index of (P_s, 4) float32 XYXY boxes, original pixels.

    Raises:
        ArtifactError: the file was made for other images or other scales, or misses images.
    """
    header, arrays = load_proposals(path)
    expected = {"images_hash": images_hash(records), "scales_hash": scales_hash(scales)}
    for key, value in expected.items():
        if header.get(key) != value:
            what = "another data set" if key == "images_hash" else "other SNIPER.SCALES"
            raise ArtifactError(f"{path}: these proposals were computed for {what} ({key} "
                                f"{header.get(key)} != {value}); run tools/dump_proposals.py again")
    num_scales = len(scales)
    order = np.lexsort((arrays["scale_index"], arrays["image_id"]))
    ids, sidx, boxes = arrays["image_id"][order], arrays["scale_index"][order], arrays["boxes"][order]
    grouped = {r["image_id"]: [np.zeros((0, 4), np.float32) for _ in range(num_scales)] for r in records}
    keys = ids * num_scales + sidx
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(keys)]
    for start, end in zip(starts, ends):
        grouped[int(ids[start])][int(sidx[start])] = boxes[start:end]
    return grouped
