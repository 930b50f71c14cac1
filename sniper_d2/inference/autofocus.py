"""AutoFocus inference: zoom into finer scales only where the focus map says small objects are.

Najibi, Singh, Davis, "AutoFocus: Efficient Multi-Scale Inference", ICCV 2019. The coarsest test
scale runs on the whole image; its focus map (``SniperFocusRCNN``'s ``"focus"`` output, stitched
over its tiles) gives *focus chips* (:func:`focus_chips`); the next finer scale runs only inside
those chips, its own focus map gives the chips of the scale after it, and so on until no chip is
left or the finest scale has run. Detections are filtered by each scale's test range and merged as
in full multi-scale inference (the predictor's ``detect_windows`` and ``merge``), with one hand-off
rule (``SNIPER.AUTOFOCUS.KEEP_SMALL_OUTSIDE_CHIPS``): a scale's lower range limit hands small objects
to the next finer scale only where that scale ran. A coarser scale's detections below its range are
kept outside the finer scale's chips (:func:`drop_handed_over`): there no finer scale looked, and in
full inference the object would have come from the finer scale.

Reading: the image is an (H, W, 3) array or an open image reader (:func:`sniper_d2.image_io.open_image`):
every scale reads only the windows it runs. In the prefetching pipeline (:mod:`sniper_d2.inference.pipeline`)
data-loader workers cut the coarsest scale's tiles (:func:`first_scale`), and :func:`autofocus_predict`
continues from that pass (:class:`CoarsePass`) on a reader opened in the main process: the finer
windows depend on the coarse pass, so only they are read there. Windows wholly in nodata are not run.

Frames: *cells* index a focus map of stride ``stride`` (cell ``(i, j)`` covers scaled pixels
``[j*stride, (j+1)*stride) x [i*stride, (i+1)*stride)``); *scaled pixels* are those of the image
resized by one scale; chips come out in the *next* scale's pixels, integer XYXY, inside that scaled
image. Original pixels = scaled pixels / scale.
"""

import math
from typing import NamedTuple

import cv2
import numpy as np

from ..chips import resolve_scale
from ..config_types import ValidRange
from ..geometry import scaled_size, tile_windows

__all__ = ["focus_components", "grow_boxes", "merge_overlapping", "focus_chips", "stitch_focus_map",
           "region_windows", "drop_handed_over", "CoarsePass", "first_scale", "first_scale_range", "autofocus_predict",
           "full_inference_pixels", "draw_focus"]


def focus_components(focus_map, threshold, dilation):
    """Connected regions of focus cells.

    Args:
        focus_map: (Hc, Wc) float array, focus probability per cell.
        threshold (float): a cell is focus when its value is >= threshold.
        dilation (int): focus cells are first dilated by a (2d+1) x (2d+1) square (0: none); the
            dilation does not reach past the map's border.

    Returns:
        (K, 4) int64 XYXY in cells, end exclusive: one bounding box per 8-connected component.
    """
    mask = (np.asarray(focus_map, np.float32) >= threshold).astype(np.uint8)
    if mask.size == 0 or not mask.any():
        return np.zeros((0, 4), np.int64)
    if dilation > 0:
        mask = cv2.dilate(mask, np.ones((2 * dilation + 1, 2 * dilation + 1), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    x, y, w, h = (stats[1:, k].astype(np.int64) for k in range(4))  # label 0 is the background
    return np.stack([x, y, x + w, y + h], axis=1)


def grow_boxes(boxes, min_size, image_size):
    """Grow each box about its centre to at least ``min_size`` a side, then shift it inside the image.

    Args:
        boxes: (K, 4) float XYXY, pixels. min_size (float): minimum side (a side of the image
            shorter than it bounds it). image_size: (h, w) pixels.

    Returns:
        (K, 4) float64 XYXY inside ``[0, w] x [0, h]``; boxes already larger keep their size (clipped).
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    limit = np.array([image_size[1], image_size[0]], np.float64)
    side = np.minimum(np.maximum(b[:, 2:] - b[:, :2], float(min_size)), limit)
    centre = (b[:, :2] + b[:, 2:]) / 2
    lo = np.clip(centre - side / 2, 0.0, limit - side)
    return np.concatenate([lo, lo + side], axis=1)


def merge_overlapping(boxes):
    """Replace every group of (transitively) overlapping boxes by their union, until none overlap.

    Args:
        boxes: (K, 4) float XYXY. Boxes that only touch (zero-area intersection) stay apart.

    Returns:
        (M, 4) float64 XYXY, M <= K, pairwise non-overlapping, covering every input box.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    while len(b) > 1:
        iw = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
        ih = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
        reach = (iw > 0) & (ih > 0)
        reach |= np.eye(len(b), dtype=bool)
        for _ in range(int(math.ceil(math.log2(len(b)))) + 1):  # transitive closure by squaring
            reach = (reach.astype(np.int64) @ reach.astype(np.int64)) > 0
        group = np.argmax(reach, axis=1)  # lowest index of each box's group
        if len(np.unique(group)) == len(b):
            break
        groups, inverse = np.unique(group, return_inverse=True)
        merged = np.tile(np.array([np.inf, np.inf, -np.inf, -np.inf]), (len(groups), 1))
        np.minimum.at(merged[:, :2], inverse, b[:, :2])
        np.maximum.at(merged[:, 2:], inverse, b[:, 2:])
        b = merged  # a union may now overlap another union: repeat
    return b


def focus_chips(focus_map, stride, map_scale, threshold, dilation, target_scale, image_size, min_chip_size):
    """Focus chips for the next scale from one scale's focus map.

    Args:
        focus_map: (Hc, Wc) float array over the image scaled by ``map_scale`` (stride ``stride``).
        stride (int): scaled pixels per cell. map_scale (float): the map's resize factor.
        threshold (float), dilation (int): see :func:`focus_components`.
        target_scale (float): resize factor of the scale the chips are for.
        image_size: (h, w) original pixels.
        min_chip_size (int): minimum chip side in target-scale pixels (:func:`grow_boxes`).

    Returns:
        (M, 4) int64 XYXY chips in target-scale pixels, inside the target-scaled image
        (:func:`sniper_d2.geometry.scaled_size`), pairwise non-overlapping.
    """
    cells = focus_components(focus_map, threshold, dilation)
    if len(cells) == 0:
        return np.zeros((0, 4), np.int64)
    th, tw = scaled_size(image_size, target_scale)
    boxes = cells.astype(np.float64) * stride / map_scale * target_scale  # map px -> original -> target px
    boxes = np.clip(boxes, 0.0, [tw, th, tw, th])
    boxes = np.concatenate([np.floor(boxes[:, :2]), np.ceil(boxes[:, 2:])], axis=1)
    boxes = merge_overlapping(grow_boxes(boxes, min_chip_size, (th, tw)))
    boxes = np.concatenate([np.floor(boxes[:, :2] + 1e-6), np.ceil(boxes[:, 2:] - 1e-6)], axis=1)
    return np.clip(boxes, 0, [tw, th, tw, th]).astype(np.int64)


def stitch_focus_map(windows, outputs, scaled_size):
    """One focus map over a scaled image from its windows' maps (cellwise max where windows overlap).

    Args:
        windows: (T, 4) int XYXY scaled pixels, the windows the model ran on (one scale).
        outputs: the model's output dict per window, each with ``"focus"`` ((hc, wc) tensor or
            array, window frame) and ``"focus_stride"`` (int).
        scaled_size: (h, w) of the scaled image.

    Returns:
        ((Hc, Wc) float32 array, stride); cells no window covered are 0. A window's cells are placed
        at ``round(window origin / stride)`` (an error below one cell, which the dilation absorbs).
    """
    if not outputs or any("focus" not in out for out in outputs):
        raise ValueError("SNIPER.TEST.MODE 'autofocus' needs focus maps, but the model returned none: use "
                         "MODEL.META_ARCHITECTURE 'SniperFocusRCNN' with SNIPER.AUTOFOCUS.ENABLED True")
    stride = int(outputs[0]["focus_stride"])
    hc, wc = math.ceil(scaled_size[0] / stride), math.ceil(scaled_size[1] / stride)
    full = np.zeros((hc, wc), np.float32)
    for window, out in zip(np.asarray(windows).reshape(-1, 4), outputs):
        fmap = out["focus"]
        fmap = fmap.detach().cpu().numpy() if hasattr(fmap, "detach") else np.asarray(fmap)
        cx, cy = int(round(window[0] / stride)), int(round(window[1] / stride))
        fmap = fmap[:max(0, hc - cy), :max(0, wc - cx)]
        region = full[cy:cy + fmap.shape[0], cx:cx + fmap.shape[1]]
        np.maximum(region, fmap, out=region)
    return full, stride


def region_windows(regions, tile_size, overlap):
    """Tile windows covering each region.

    Args:
        regions: (K, 4) int XYXY scaled pixels (focus chips). tile_size, overlap: scaled pixels.

    Returns:
        (T, 4) int64 XYXY scaled pixels: each region tiled as a whole image is
        (:func:`~sniper_d2.geometry.tile_windows`), all regions' windows ordered by (height, width), so
        that a batch of tiles holds similar sizes (the model pads a batch to its largest tile).
    """
    windows = [tile_windows((r[3] - r[1], r[2] - r[0]), tile_size, overlap) + np.array([r[0], r[1], r[0], r[1]])
               for r in np.asarray(regions, np.int64).reshape(-1, 4)]
    if not windows:
        return np.zeros((0, 4), np.int64)
    windows = np.concatenate(windows)
    return windows[np.lexsort((windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1]))]


def drop_handed_over(detections, lo, chips):
    """Drop the detections a finer scale was responsible for: below ``lo`` and centred in a chip.

    Args:
        detections: (boxes (K, 4) float XYXY original px, scores (K,), classes (K,)) tensors.
        lo (float): the scale's lower test-range limit, ``sqrt(w*h)`` in original px (a box is
            small when its size is <= lo, the complement of :meth:`ValidRange.test_mask`).
        chips: (M, 4) float XYXY original px, where the next finer scale ran.

    Returns:
        the same triple without the small boxes whose centre lies inside a chip (half-open
        ``[x0, x1) x [y0, y1)``); boxes of size > lo are all kept.
    """
    boxes, scores, classes = detections
    if len(boxes) == 0:
        return detections
    size = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    chips = boxes.new_tensor(np.asarray(chips, np.float64).reshape(-1, 4))
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = ((cx[:, None] >= chips[:, 0]) & (cx[:, None] < chips[:, 2]) &
              (cy[:, None] >= chips[:, 1]) & (cy[:, None] < chips[:, 3])).any(dim=1)
    keep = ~((size <= lo) & inside)
    return boxes[keep], scores[keep], classes[keep]


def full_inference_pixels(image_size, params):
    """(S,) int64 pixels full multi-scale tiled inference processes per scale of one image
    (the tiles' areas; overlaps count twice, as the detector runs on them twice)."""
    h, w = image_size
    pixels = np.zeros(len(params.scales), np.int64)
    for s_idx, entry in enumerate(params.scales):
        scale = resolve_scale(entry, (h, w), params.fit_size)
        win = tile_windows(scaled_size((h, w), scale), params.tile_size, params.tile_overlap)
        pixels[s_idx] = int(((win[:, 2] - win[:, 0]) * (win[:, 3] - win[:, 1])).sum())
    return pixels


class CoarsePass(NamedTuple):
    """The coarsest scale's pass over the whole image, run elsewhere (the tile pipeline).

    ``found``: (boxes, scores, classes) as :meth:`MultiScaleTiledPredictor.detect_windows` returns
    them, filtered by :func:`first_scale_range`; ``raw``: the model's output dicts of the windows run
    (each with ``"window"``); ``pixels`` (int): scaled pixels run at that scale.
    """

    found: tuple
    raw: list
    pixels: int


def _scale_order(params, image_size):
    """(resolved scale per SNIPER.TEST.SCALES entry, indices coarse to fine)."""
    scales = [resolve_scale(entry, image_size, params.fit_size) for entry in params.scales]
    return scales, sorted(range(len(scales)), key=lambda i: scales[i])


def first_scale(params, image_size):
    """(scale index, scale, windows (T, 4) int64 XYXY scaled px) of the scale AutoFocus runs on the
    whole image: the coarsest at which the image does not vanish; None when it vanishes at all."""
    h, w = image_size
    scales, order = _scale_order(params, image_size)
    for s_idx in order:
        scaled = scaled_size((h, w), scales[s_idx])
        if min(scaled) >= 1:
            return s_idx, scales[s_idx], tile_windows(scaled, params.tile_size, params.tile_overlap)
    return None


def first_scale_range(params, image_size):
    """The ValidRange the first scale's detections are filtered by: ``(0, hi]`` of its range when it
    hands small objects to a finer scale (``focus_keep_small_outside_chips``), else its own range."""
    s_idx = first_scale(params, image_size)[0]
    _, order = _scale_order(params, image_size)
    valid = params.valid_ranges[s_idx]
    finest = s_idx == order[-1]
    return ValidRange(0.0, valid.hi) if params.focus_keep_small_outside_chips and not finest else valid


def autofocus_predict(predictor, image, coarse=None):
    """AutoFocus inference on one image (``SNIPER.TEST.MODE "autofocus"``).

    Args:
        predictor (MultiScaleTiledPredictor): its params carry ``focus_thresholds``,
            ``focus_dilations`` and ``focus_min_chip_sizes`` (one per ``SNIPER.TEST.SCALES`` entry).
        image: (H, W, 3) uint8, original size, or an open image reader.
        coarse (CoarsePass or None): the first scale's pass (:func:`first_scale`), already run;
            None: run it here.

    With ``focus_keep_small_outside_chips`` a scale that hands chips to a finer one filters its
    detections by its range's upper limit only, then drops the small ones inside the finer scale's
    chips (:func:`drop_handed_over`).

    Returns:
        dict: ``boxes``, ``scores``, ``classes`` as full inference returns them; ``pixels`` (S,)
        int64 pixels processed per scale (0 for a scale skipped); ``autofocus``: {``chips``: {scale
        index: (M, 4) float XYXY original pixels where that scale ran}, ``maps``: {scale index:
        ((Hc, Wc) float32 focus map, cell side in original pixels)}}.
    """
    from .predictor import image_size_of

    if not hasattr(image, "read_region") and not (
            isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8):
        raise ValueError(f"expected an (H, W, C) uint8 image, got {type(image).__name__} "
                         f"{getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}")
    p = predictor.params
    h, w = image_size_of(image)
    scales, order = _scale_order(p, (h, w))  # coarse to fine
    parts, pixels = [], np.zeros(len(scales), np.int64)
    chips_orig, maps = {}, {}
    regions = None  # None: the whole image
    for k, s_idx in enumerate(order):
        scale = scales[s_idx]
        scaled = scaled_size((h, w), scale)
        if min(scaled) < 1:
            continue  # the image vanishes at this scale; the next one starts from the whole image
        if regions is None:
            windows = tile_windows(scaled, p.tile_size, p.tile_overlap)
            chips_orig[s_idx] = np.array([[0.0, 0.0, w, h]])
        else:
            windows = region_windows(regions, p.tile_size, p.tile_overlap)
            chips_orig[s_idx] = regions / scale
        raw = []
        finest = k == len(order) - 1
        valid = p.valid_ranges[s_idx]
        keep_small = p.focus_keep_small_outside_chips and not finest
        if regions is None and coarse is not None:  # the first scale, run by the caller
            found, raw, pixels[s_idx] = coarse.found, list(coarse.raw), coarse.pixels
        else:
            found = predictor.detect_windows(image, s_idx, windows, scale=scale, raw_outputs=raw,
                                             valid_range=ValidRange(0.0, valid.hi) if keep_small else None,
                                             pixels=pixels)
        if finest or not raw:  # the finest scale, or every window lay in nodata
            parts.append(found)
            break
        fmap, stride = stitch_focus_map([out["window"] for out in raw], raw, scaled)
        maps[s_idx] = (fmap, stride / scale)
        nxt = order[k + 1]
        regions = focus_chips(fmap, stride, scale, p.focus_thresholds[s_idx], p.focus_dilations[s_idx],
                              scales[nxt], (h, w), p.focus_min_chip_sizes[s_idx])
        parts.append(drop_handed_over(found, valid.lo, regions / scales[nxt]) if keep_small else found)
        if len(regions) == 0:
            break
    return {**predictor.merge(parts), "pixels": pixels, "autofocus": {"chips": chips_orig, "maps": maps}}


_CHIP_COLORS = [(0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 128, 255)]  # BGR, per scale (fine to coarse)


def draw_focus(image_bgr, focus, scales):
    """Picture of where AutoFocus zoomed in: focus maps as a red overlay, chips per scale as boxes.

    Args:
        image_bgr: (H, W, 3) uint8, original size.
        focus: the ``autofocus`` entry of :func:`autofocus_predict`'s result.
        scales: resolved resize factor per ``SNIPER.TEST.SCALES`` entry (for the labels).

    Returns:
        (H, W, 3) uint8 BGR: the image, reddened by the maximum focus probability over the scales'
        maps (each map cell drawn over the original pixels it covers), and each finer scale's chips
        outlined in its own colour and labelled with its scale.
    """
    h, w = image_bgr.shape[:2]
    heat = np.zeros((h, w), np.float32)
    for fmap, cell in focus["maps"].values():
        size = (max(1, int(round(fmap.shape[1] * cell))), max(1, int(round(fmap.shape[0] * cell))))
        up = cv2.resize(np.asarray(fmap, np.float32), size, interpolation=cv2.INTER_NEAREST)[:h, :w]
        np.maximum(heat[:up.shape[0], :up.shape[1]], up, out=heat[:up.shape[0], :up.shape[1]])
    out = image_bgr.astype(np.float32)
    out[..., 2] = out[..., 2] * (1 - heat) + 255 * heat
    out[..., :2] *= (1 - 0.5 * heat)[..., None]
    out = out.clip(0, 255).astype(np.uint8)
    thickness = max(1, round(max(h, w) / 600))
    coarsest = min(focus["chips"], key=lambda i: scales[i]) if focus["chips"] else None
    for s_idx, chips in focus["chips"].items():
        if s_idx == coarsest:
            continue  # the whole image
        color = _CHIP_COLORS[s_idx % len(_CHIP_COLORS)]
        for x0, y0, x1, y1 in np.round(chips).astype(int).tolist():
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, thickness)
            cv2.putText(out, f"{scales[s_idx]:g}x", (x0 + 3, y0 + 14 * thickness), cv2.FONT_HERSHEY_SIMPLEX,
                        0.45 * thickness, color, thickness)
    return out
