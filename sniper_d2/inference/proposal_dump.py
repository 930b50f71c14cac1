"""Dumping a weakly trained detector's RPN proposals over the training set, for negative chips.

Every training image is processed at every SNIPER training scale (``SNIPER.SCALES``; the fit scale
fits the long side to ``CHIP_SIZE``), tiled by the predictor's tile generator
(:meth:`~sniper_d2.inference.predictor.MultiScaleTiledPredictor.tiles`: ``SNIPER.TEST.TILE_SIZE`` windows with
``TILE_OVERLAP``, cut from the original image and resized one at a time, ``TILE_BATCH_SIZE`` tiles
per forward pass; a scale at which the image vanishes gives no proposal). Per image and scale the
tiles' proposals are mapped to original pixels, merged with NMS (``SNIPER.NEG.NMS_THRESH``) and the
top ``SNIPER.NEG.TOPK_PER_SCALE`` kept. Work is sharded over processes (``rank::world``) and saved in
parts every few images (see :mod:`sniper_d2.proposals`), so an interrupted dump resumes where it
stopped; rank 0 merges the parts into one versioned file.
"""

import logging

import numpy as np
import torch
from detectron2.structures import Boxes
from detectron2.utils import comm
from torchvision.ops import nms

from ..coco import images_hash
from ..chips import resolve_scale
from ..image_io import open_image
from ..proposals import finished_image_ids, merge_proposal_parts, save_proposal_part, scales_hash
from .precision import backbone_autocast
from .predictor import MultiScaleTiledPredictor, TiledInferenceParams, image_size_of, tile_batches

__all__ = ["image_proposals", "dump_proposals"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def _rpn(tiling, tiles):
    """RPN proposals of a batch of :class:`~sniper_d2.inference.predictor.Tile` s through
    ``tiling.model`` (its backbone in ``tiling.precision``): list of (boxes (P, 4) float32 tile
    pixels, logits (P,)) on CPU."""
    model = tiling.model
    inputs = [{"image": torch.as_tensor(np.ascontiguousarray(t.pixels.transpose(2, 0, 1)))} for t in tiles]
    images = model.preprocess_image(inputs)
    with backbone_autocast(model, tiling.precision, tiling.device_type):
        features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    return [(p.proposal_boxes.tensor.float().cpu(), p.objectness_logits.cpu()) for p in proposals]


def image_proposals(model, image, scales, chip_size, tile_size, tile_overlap, batch_size, topk, nms_thresh,
                    precision="fp32"):
    """Proposals of one image at each scale.

    Args:
        model: detectron2 GeneralizedRCNN in eval mode.
        image: (H, W, 3) uint8 original image in the model's input format, or an open image reader
            (:func:`sniper_d2.image_io.open_image`; tiles then read only the pixels they need, and
            tiles wholly in the image's nodata are not run).
        scales: SNIPER.SCALES entries (factor or -1 = fit the long side to ``chip_size``).
        chip_size (int): the fit scale's long side, scaled pixels.
        tile_size (int), tile_overlap (int): windows and their overlap, scaled pixels.
        batch_size (int): tiles per forward pass. topk (int), nms_thresh (float): kept per scale after NMS.
        precision (str): of the backbone, a ``SNIPER.TEST.PRECISION`` value (the RPN stays float32).

    Returns:
        list over scales of (boxes (K, 4) float32 XYXY original pixels, scores (K,) float32); a scale
        at which the image vanishes gives K = 0.
    """
    h, w = image_size_of(image)
    # The predictor's tiling at the training scales (its test ranges are not used: no detection step).
    tiling = MultiScaleTiledPredictor(model, TiledInferenceParams(
        scales=tuple(scales), valid_ranges=((0.0, -1.0),) * len(scales), tile_size=tile_size, fit_size=chip_size,
        tile_overlap=tile_overlap, tile_batch_size=batch_size, precision=precision))
    boxes, scores = [[] for _ in scales], [[] for _ in scales]
    for batch in tile_batches(tiling.tiles(image), batch_size):
        for tile, (b, s) in zip(batch, _rpn(tiling, batch)):
            x0, y0 = tile.origin
            boxes[tile.scale_index].append(b / tile.scale + torch.tensor([x0, y0, x0, y0], dtype=torch.float32))
            scores[tile.scale_index].append(s)
    out = []
    for scale_boxes, scale_scores in zip(boxes, scores):
        if not scale_boxes:  # the image vanishes at this scale
            out.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
            continue
        b, s = Boxes(torch.cat(scale_boxes)), torch.cat(scale_scores)
        b.clip((h, w))
        b = b.tensor
        keep = nms(b, s, nms_thresh)[:topk]
        out.append((b[keep].numpy().astype(np.float32), s[keep].numpy().astype(np.float32)))
    return out


def dump_proposals(cfg, model, records, output_path, save_every=16):
    """Dump proposals of ``records`` (this process's share) and merge on rank 0.

    Args:
        cfg: config with SNIPER.* keys. model: GeneralizedRCNN (eval mode is set here).
        records (list[dict]): the training set (see :func:`sniper_d2.coco.load_coco_records`).
        output_path (str): the proposals file to write.
        save_every (int): images per saved part (the resume granularity).
    """
    from tqdm import tqdm

    header = {"images_hash": images_hash(records), "scales_hash": scales_hash(cfg.SNIPER.SCALES),
              "scales": list(cfg.SNIPER.SCALES)}
    done = finished_image_ids(output_path, header)
    rank, world = comm.get_rank(), comm.get_world_size()
    mine = [r for r in records[rank::world] if r["image_id"] not in done]
    if done:
        logger.info(f"resuming the proposal dump: {len(done)} images already done")
    model.eval()
    rows, done_ids, part = [], [], 0

    def flush():
        nonlocal rows, done_ids, part
        if not done_ids:
            return
        # Every finished image adds one row per scale (possibly empty), so rows is not empty.
        cat = [np.concatenate(column) for column in zip(*rows)]
        name = f"rank{rank}_{done_ids[0]}_{len(done) + part}"
        save_proposal_part(output_path, name, header, done_ids, *cat)
        rows, done_ids, part = [], [], part + 1

    t = cfg.SNIPER.TEST
    for rec in tqdm(mine, desc=f"proposals (rank {rank})", unit="img", disable=not comm.is_main_process()):
        with open_image(rec["file_name"], cfg.INPUT.FORMAT, max_reduction=lambda size: 1.0 / max(
                resolve_scale(s, size, cfg.SNIPER.CHIP_SIZE) for s in cfg.SNIPER.SCALES),
                max_image_pixels=int(cfg.SNIPER.INPUT.MAX_IMAGE_PIXELS)) as reader:
            per_scale = image_proposals(model, reader, cfg.SNIPER.SCALES, cfg.SNIPER.CHIP_SIZE, t.TILE_SIZE,
                                        t.TILE_OVERLAP, t.TILE_BATCH_SIZE, cfg.SNIPER.NEG.TOPK_PER_SCALE,
                                        cfg.SNIPER.NEG.NMS_THRESH, precision=t.PRECISION)
        for s_idx, (boxes, scores) in enumerate(per_scale):
            rows.append((np.full(len(boxes), rec["image_id"], np.int64), np.full(len(boxes), s_idx, np.int32),
                         boxes, scores))
        done_ids.append(rec["image_id"])
        if len(done_ids) >= save_every:
            flush()
    flush()
    comm.synchronize()
    if comm.is_main_process():
        merge_proposal_parts(output_path, header)
    comm.synchronize()
