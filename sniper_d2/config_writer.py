"""The configs a user trains next: SNIPER with derived scales, plain slicing, and the equal-pixel
single-scale baseline.

Numpy and PyYAML only (``tools/compute_scale_stats.py`` runs without torch). Both configs take the
user's config as ``_BASE_`` and add what the data decides:

- ``MODEL.ROI_HEADS.NUM_CLASSES``: the training json's category count;
- ``SNIPER.REGISTER_COCO`` / ``DATASETS.TRAIN`` / ``DATASETS.TEST``: the jsons given;
- a detection cap above the most crowded image (``TEST.DETECTIONS_PER_IMAGE``, and for the baseline
  ``MODEL.RPN.POST_NMS_TOPK_TEST``), the same in both configs, so neither is capped below what the
  data holds;
- SNIPER: the derived ``SNIPER:`` section (:class:`sniper_d2.stats.ScaleSuggestion`);
- baseline: ``SNIPER.ENABLED False``, ``B`` whole images per iteration resized to a short side ``S``
  such that ``B * S^2 * aspect`` (median long/short side of the training images) equals SNIPER's
  ``SOLVER.IMS_PER_BATCH * CHIP_SIZE^2`` training pixels per iteration; ``B`` = a quarter of
  SNIPER's chips per batch (at least 1) and ``BASE_LR`` scaled by the linear rule;
- sliced: the whole slicing workflow (SAHI, PaddleDetection smalldet, DeepForest) through the same
  planner, loader and evaluator: ``SNIPER.PLAN.MODE "sliced"``, every ``CHIP_SIZE`` tile at the one
  scale that puts the median object mid-band (:class:`SliceSettings`), every object valid, as many
  chips per iteration and iterations as SNIPER; inference on tiles of ``CHIP_SIZE`` at that scale
  alone, every detection kept.
"""

import math
import os
import re
import shlex
from dataclasses import dataclass

import numpy as np

from .coco import DatasetError, load_coco_records
from .config_files import config_value

__all__ = ["DatasetInfo", "SliceSettings", "slice_settings", "dataset_info", "detection_cap", "baseline_resize",
           "dataset_name", "write_configs"]

# Overlap of neighbouring training tiles, fraction of the tile side: SAHI's default (0.2).
DEFAULT_SLICE_OVERLAP = 0.2


@dataclass
class DatasetInfo:
    """What the configs need from one COCO json.

    Attributes:
        json_file (str): absolute path. name (str): the data set name registered for it.
        num_images (int). categories (list[dict]): the json's categories, in order.
        max_objects (int): most annotations (crowd included) in one image.
        sizes_hw ((M, 2) float64): image (height, width).
    """

    json_file: str
    name: str
    num_images: int
    categories: list
    max_objects: int
    sizes_hw: np.ndarray


@dataclass(frozen=True)
class SliceSettings:
    """Plain slicing at one scale (``sliced.yaml``).

    Attributes:
        scale (float): resize factor putting the median object mid-band (3 significant digits).
        overlap (float): training tiles' overlap, fraction of ``CHIP_SIZE``.
        test_overlap_px (int): test tiles' overlap, scaled pixels: at least the training overlap, and
            the 98th-percentile object at ``scale`` (capped at half a tile), so that tiled inference,
            which drops boxes cut by an inner tile border, sees nearly every object whole in a tile.
    """

    scale: float
    overlap: float
    test_overlap_px: int


def slice_settings(absolute, suggestion, overlap=DEFAULT_SLICE_OVERLAP):
    """:class:`SliceSettings` for objects of sizes ``absolute`` ((N,) sqrt(w*h), original pixels)."""
    from .stats import single_scale_alternative

    scale = float(f"{single_scale_alternative(absolute, suggestion.band):.3g}")
    chip = int(suggestion.chip_size)
    big = float(np.percentile(np.asarray(absolute, np.float64), 98)) * scale if len(absolute) else 0.0
    test_overlap = min(max(int(round(overlap * chip)), int(math.ceil(big / 8.0)) * 8), chip // 2)
    return SliceSettings(scale=scale, overlap=float(overlap), test_overlap_px=test_overlap)


def dataset_name(json_file, prefix=None):
    """``<prefix>_<stem>`` of a json path, made of letters, digits and ``_`` (e.g. ``synthetic_train``);
    the prefix defaults to the json's folder name."""
    path = os.path.abspath(json_file)
    folder = prefix if prefix is not None else os.path.basename(os.path.dirname(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{folder}_{stem}" if folder else stem
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "dataset"


def dataset_info(json_file, records=None, categories=None, prefix=None):
    """:class:`DatasetInfo` of a json (``records`` / ``categories`` when already loaded; ``prefix``: see
    :func:`dataset_name`)."""
    if records is None:
        records, categories = load_coco_records(json_file)
    sizes = np.array([(r["height"], r["width"]) for r in records], np.float64).reshape(-1, 2)
    return DatasetInfo(json_file=os.path.abspath(json_file), name=dataset_name(json_file, prefix),
                       num_images=len(records), categories=list(categories),
                       max_objects=max((len(r["boxes"]) for r in records), default=0), sizes_hw=sizes)


def detection_cap(max_objects, base_cap=100):
    """Detections kept per image: 1.5x the most crowded image, rounded up to 100, at least ``base_cap``."""
    return int(max(base_cap, math.ceil(1.5 * max_objects / 100.0) * 100))


def baseline_resize(sizes_hw, pixels_per_iter, images_per_iter):
    """(short side, long side cap) giving ``images_per_iter`` whole images ``pixels_per_iter`` pixels.

    The short side uses the median aspect ratio, rounded to a multiple of 32; the long-side cap is
    the short side times the 95th percentile aspect, rounded up to a multiple of 32.
    """
    sizes = np.asarray(sizes_hw, np.float64).reshape(-1, 2)
    aspect = sizes.max(axis=1) / sizes.min(axis=1)
    short = math.sqrt(pixels_per_iter / (images_per_iter * float(np.median(aspect))))
    short = max(32, int(round(short / 32.0)) * 32)
    long = int(math.ceil(short * float(np.percentile(aspect, 95)) / 32.0)) * 32
    return short, max(long, short)


def _tuple(values):
    return "(" + ", ".join(values) + ("," if len(values) == 1 else "") + ")"


def _quote(text):
    return '"' + text + '"'


def _register(infos, image_roots):
    entries = [f"({_quote(i.name)}, {_quote(i.json_file)}, {_quote(root)})" for i, root in zip(infos, image_roots)]
    return _tuple(entries)


def write_configs(output_dir, base_config, cfg_dict, suggestion, train, tests=(), image_roots=None, slicing=None):
    """Write ``<output_dir>/sniper.yaml``, ``baseline.yaml`` and (with ``slicing``) ``sliced.yaml``.

    Args:
        output_dir (str): folder to write into.
        base_config (str): the user's config file, ``_BASE_`` of both.
        cfg_dict (dict): that config read by :func:`sniper_d2.config_files.read_config_yaml`.
        suggestion (ScaleSuggestion): the derived SNIPER settings.
        train (DatasetInfo): the training json. tests (list[DatasetInfo]): validation / test jsons.
        image_roots (list[str] or None): per data set (train first) image folder; "" = beside the json.
        slicing (SliceSettings or None): write ``sliced.yaml`` too (:func:`slice_settings`).

    Returns:
        dict: ``sniper``, ``baseline`` and (with ``slicing``) ``sliced`` (paths), ``commands`` (list[str]:
        train each, evaluate,
        infer), ``cap``, ``baseline_short``, ``baseline_long``, ``baseline_images``.

    Raises:
        DatasetError: a test json's categories differ from the training json's.
    """
    from .io import atomic_open

    for t in tests:
        if [c["id"] for c in t.categories] != [c["id"] for c in train.categories]:
            raise DatasetError(f"{t.json_file}: its categories {[c['id'] for c in t.categories]} differ from "
                               f"those of {train.json_file} {[c['id'] for c in train.categories]}")
    infos = [train, *tests]
    roots = list(image_roots or [])
    roots += [""] * (len(infos) - len(roots))
    cap = detection_cap(max(i.max_objects for i in infos),
                        int(config_value(cfg_dict, "TEST.DETECTIONS_PER_IMAGE", 100) or 100))
    chips_per_iter = int(config_value(cfg_dict, "SOLVER.IMS_PER_BATCH", 16))
    base_lr = float(config_value(cfg_dict, "SOLVER.BASE_LR", 0.02))
    images_per_iter = max(1, int(round(chips_per_iter / 4)))
    short, long = baseline_resize(train.sizes_hw, chips_per_iter * suggestion.chip_size ** 2, images_per_iter)
    rpn_topk = max(int(config_value(cfg_dict, "MODEL.RPN.POST_NMS_TOPK_TEST", 1000)), cap)
    out_root = str(config_value(cfg_dict, "OUTPUT_DIR", "output") or "output")
    out_root = os.path.dirname(out_root.rstrip("/")) or "output"
    base = os.path.abspath(base_config)
    names = [i.name for i in infos]
    crowded = max(i.max_objects for i in infos)

    def head(rpn_topk=None):
        lines = [f"_BASE_: \"{base}\"",
                 "# SOLVER.STEPS follow SOLVER.MAX_ITER: change only MAX_ITER (here or on the command line) and",
                 "# the base config's steps are scaled with it; steps at or past MAX_ITER are refused at start-up.",
                 "MODEL:"]
        if rpn_topk is not None:
            lines += ["  RPN:", f"    POST_NMS_TOPK_TEST: {rpn_topk}  # at least the detection cap"]
        lines += ["  ROI_HEADS:",
                  f"    NUM_CLASSES: {len(train.categories)}  # categories in {os.path.basename(train.json_file)}",
                  "DATASETS:",
                  f"  TRAIN: {_tuple([_quote(names[0])])}",
                  f"  TEST: {_tuple([_quote(n) for n in names[1:]])}",
                  "TEST:",
                  f"  DETECTIONS_PER_IMAGE: {cap}  # the most crowded image holds {crowded} objects"]
        return lines

    sniper_yaml = "\n".join([
        f"# SNIPER config for {train.json_file}, derived by tools/compute_scale_stats.py:",
        *(f"#   {line}" for line in suggestion.explanation),
        *head(),
        "SNIPER:",
        "  ENABLED: True",
        f"  REGISTER_COCO: {_register(infos, roots)}",
        *suggestion.yaml_lines(),
        f"OUTPUT_DIR: \"{os.path.join(out_root, train.name + '_sniper')}\"",
    ]) + "\n"
    lr = base_lr * images_per_iter / chips_per_iter
    baseline_yaml = "\n".join([
        f"# Single-scale baseline for {os.path.join(output_dir, 'sniper.yaml')}: the same model, data and caps;",
        f"# {images_per_iter} whole image(s) per iteration at short side {short} (long side <= {long}) = the",
        f"# training pixels of {chips_per_iter} chips of {suggestion.chip_size} px; BASE_LR by the linear rule.",
        *head(rpn_topk),
        "SNIPER:",
        "  ENABLED: False",
        f"  REGISTER_COCO: {_register(infos, roots)}",
        "SOLVER:",
        f"  IMS_PER_BATCH: {images_per_iter}",
        f"  BASE_LR: {lr:.6g}",
        "INPUT:",
        f"  MIN_SIZE_TRAIN: ({short},)",
        f"  MAX_SIZE_TRAIN: {long}",
        f"  MIN_SIZE_TEST: {short}",
        f"  MAX_SIZE_TEST: {long}",
        f"OUTPUT_DIR: \"{os.path.join(out_root, train.name + '_baseline')}\"",
    ]) + "\n"
    texts = {"sniper": sniper_yaml, "baseline": baseline_yaml}
    if slicing is not None:
        chip = int(suggestion.chip_size)
        texts["sliced"] = "\n".join([
            f"# Plain slicing for {os.path.join(output_dir, 'sniper.yaml')}: the same model, data, caps, chips per",
            f"# iteration and iterations; every {chip} px tile (overlap {slicing.overlap:g}) at {slicing.scale:g}x,",
            "# the scale that puts the median object mid-band, background tiles included, every object valid;",
            f"# inference on {chip} px tiles at that scale alone (overlap {slicing.test_overlap_px} px), as SAHI",
            "# infers.",
            *head(),
            "SNIPER:",
            "  ENABLED: True",
            f"  REGISTER_COCO: {_register(infos, roots)}",
            f"  SCALES: [{slicing.scale:g}]",
            "  VALID_RANGES: [[0.0, -1.0]]  # not used when slicing: every size is valid",
            f"  CHIP_SIZE: {chip}",
            "  PLAN:",
            "    MODE: \"sliced\"",
            f"    SLICE_OVERLAP: {slicing.overlap:g}",
            "  NEG:",
            "    MIN_PROPOSALS: [25]  # not used when slicing (background tiles are trained already)",
            "  TEST:",
            f"    SCALES: [{slicing.scale:g}]",
            "    VALID_RANGES: [[0.0, -1.0]]",
            f"    TILE_SIZE: {chip}",
            f"    TILE_OVERLAP: {slicing.test_overlap_px}",
            f"OUTPUT_DIR: \"{os.path.join(out_root, train.name + '_sliced')}\"",
        ]) + "\n"
    os.makedirs(output_dir, exist_ok=True)
    paths = {key: os.path.join(output_dir, f"{key}.yaml") for key in texts}
    for key, text in texts.items():
        with atomic_open(paths[key]) as f:
            f.write(text)
    q = shlex.quote
    sniper_out = os.path.join(out_root, train.name + "_sniper")
    commands = [f"python train_net.py --config-file {q(paths[key])} --num-gpus 1" for key in texts]
    if tests:
        commands.append(f"python train_net.py --config-file {q(paths['sniper'])} --eval-only "
                        f"MODEL.WEIGHTS {q(os.path.join(sniper_out, 'model_final.pth'))}")
    commands.append(f"python tools/infer.py --config-file {q(paths['sniper'])} --input 'photos/*.jpg' "
                    f"--output {q(os.path.join(out_root, train.name + '_drawn'))} "
                    f"MODEL.WEIGHTS {q(os.path.join(sniper_out, 'model_final.pth'))}")
    return {**paths, "commands": commands, "cap": cap, "baseline_short": short, "baseline_long": long,
            "baseline_images": images_per_iter}
