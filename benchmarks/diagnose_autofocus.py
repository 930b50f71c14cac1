#!/usr/bin/env python
"""Where does AutoFocus lose AP against full multi-scale inference? Per ground-truth object, measured.

Runs one model both ways on the images of one or more COCO splits (as bench_autofocus does, no
timing) and keeps, for every detection, the scale it came from. Then, per split:

- COCO AP, AP50, AP75 of both modes and AP per object size band (sqrt(w*h), original px; the bands
  follow the scales' test ranges);
- the objects full inference finds and AutoFocus misses (a same-class detection with IoU >= 0.5
  and score >= ``--score``), each classified by the scale whose detection found it in full mode:
  ``not run`` (AutoFocus ran that scale on no chip touching the object: focus below threshold or
  component dropped; the coarser map's maximum over the object is reported), ``cut`` (chips touch
  the object but none contains it: the border rule drops its box), ``inside`` (a chip contains it:
  the detector saw it and still missed: tiling / merge differences);
- false positives at that score (no same-class object with IoU >= 0.5) of each mode, per scale, and
  for AutoFocus how many touch a chip side that is not an image side (truncated partial boxes);
- with ``--oracle-focus`` AutoFocus also runs with focus maps built from the ground truth (cells on
  objects below each scale's hand-over size; see :func:`gt_focus_map`): the AP the chip mechanism
  itself keeps, whatever the focus head predicts.

Example:
    OMP_NUM_THREADS=1 python benchmarks/diagnose_autofocus.py --weights output/bench_autofocus/model/model_final.pth \\
        --json output/bench_autofocus/data_seed9/val.json output/bench_autofocus/data_seed9/sparse.json --oracle-focus
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_autofocus import build_predictors  # noqa: E402  (the same model and predictors as the benchmark)

from sniper_d2.cli import parse_with_overrides  # noqa: E402

BANDS = ((0, 20), (20, 48), (48, 112), (112, 1e9))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="configs/sniper_tiny_cpu_autofocus.yaml")
    p.add_argument("--weights", required=True)
    p.add_argument("--json", nargs="+", required=True, help="COCO splits (images under <folder>/images)")
    p.add_argument("--score", type=float, default=0.3, help="score of a 'found' object / counted false positive")
    p.add_argument("--oracle-focus", action="store_true", help="also AutoFocus with ground-truth focus maps")
    p.add_argument("--hand-over", type=float, default=None,
                   help="oracle maps: objects below this many scaled px of a scale are focus "
                        "(default: the top of SNIPER.AUTOFOCUS.POSITIVE_RANGE)")
    p.add_argument("--skip-full-cache", default=None, help="npz cache of full-mode detections (reused if present)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides")
    return parse_with_overrides(p, argv)


def build(args):
    """cfg and the full / AutoFocus predictors of ``--config-file`` with ``--weights``."""
    cfg, _, predictors = build_predictors(args.config_file, args.weights, args.opts)
    return cfg, predictors


class Recorder:
    """Wraps a predictor's merge to keep the unmerged parts (one per scale call) of the last image."""

    def __init__(self, predictor):
        self.parts = []
        merge = predictor.merge

        def recording_merge(parts):
            self.parts = list(parts)
            return merge(parts)

        predictor.merge = recording_merge


def full_by_scale(predictor, image):
    """Full inference with one part per scale: (merged dict, [(scale_index, part)])."""
    parts = [(s_idx, predictor.detect_windows(image, s_idx, windows, scale=scale))
             for s_idx, scale, windows in predictor.scale_windows(image.shape[:2])]
    return predictor.merge([p for _, p in parts]), parts


def source_scale(merged_boxes, tagged_parts):
    """(K,) scale index each merged box came from (NMS keeps original boxes; -1 if none matches)."""
    src = np.full(len(merged_boxes), -1, np.int64)
    for s_idx, part in tagged_parts:
        if len(part[0]) == 0 or len(merged_boxes) == 0:
            continue
        eq = (merged_boxes[:, None, :] == part[0].cpu()[None, :, :]).all(-1).any(1).numpy()
        src[eq & (src < 0)] = s_idx
    return src


def iou(a, b):
    from torchvision.ops import box_iou

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return box_iou(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)).numpy()


def match(gt_boxes, gt_cls, det, score):
    """Per GT: best same-class IoU among detections >= score and that detection's index; per
    detection >= score: whether it matches a GT at IoU 0.5."""
    keep = det["scores"].numpy() >= score
    boxes, cls = det["boxes"].numpy()[keep], det["classes"].numpy()[keep]
    m = iou(gt_boxes, boxes) * (gt_cls[:, None] == cls[None, :])
    best = m.max(1) if m.shape[1] else np.zeros(len(gt_boxes))
    arg = np.flatnonzero(keep)[m.argmax(1)] if m.shape[1] else np.full(len(gt_boxes), -1)
    det_tp = (m >= 0.5).any(0) if m.shape[0] else np.zeros(len(boxes), bool)
    return best, arg, np.flatnonzero(keep), det_tp


def coverage(box, chips):
    """'inside' (a chip contains box), 'cut' (chips touch it, none contains it), 'not run'."""
    if chips is None or len(chips) == 0:
        return "not run"
    c = np.asarray(chips)
    inside = (c[:, 0] <= box[0] + 1e-3) & (c[:, 1] <= box[1] + 1e-3) & (c[:, 2] >= box[2] - 1e-3) & (c[:, 3] >= box[3] - 1e-3)
    if inside.any():
        return "inside"
    touch = (c[:, 0] < box[2]) & (c[:, 2] > box[0]) & (c[:, 1] < box[3]) & (c[:, 3] > box[1])
    return "cut" if touch.any() else "not run"


def map_max(maps, s_idx, box):
    """Maximum of scale ``s_idx``'s focus map over the cells ``box`` (original px) covers (nan: no map)."""
    if s_idx not in maps:
        return float("nan")
    fmap, cell = maps[s_idx]
    x0, y0 = int(box[0] // cell), int(box[1] // cell)
    x1, y1 = int(np.ceil(box[2] / cell)), int(np.ceil(box[3] / cell))
    region = fmap[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return float(region.max()) if region.size else float("nan")


def touches_chip_side(boxes, chips, image_size, margin=2.0):
    """(K,) bool: the box lies in a chip and touches one of its sides that is not an image side."""
    h, w = image_size
    out = np.zeros(len(boxes), bool)
    for c in np.asarray(chips).reshape(-1, 4):
        inside = (boxes[:, 0] >= c[0] - margin) & (boxes[:, 1] >= c[1] - margin) & (boxes[:, 2] <= c[2] + margin) & (boxes[:, 3] <= c[3] + margin)
        side = ((np.abs(boxes[:, 0] - c[0]) <= margin) & (c[0] > 0)) | ((np.abs(boxes[:, 1] - c[1]) <= margin) & (c[1] > 0)) | \
               ((np.abs(boxes[:, 2] - c[2]) <= margin) & (c[2] < w)) | ((np.abs(boxes[:, 3] - c[3]) <= margin) & (c[3] < h))
        out |= inside & side
    return out


def gt_focus_map(gt_boxes, scaled_size, stride, scale, hand_over):
    """Focus map from the ground truth: cells (stride ``stride`` scaled px) on objects whose size at
    ``scale`` is below ``hand_over`` scaled px are 1, others 0."""
    from sniper_d2.modeling.focus import focus_labels

    hc, wc = -(-scaled_size[0] // stride), -(-scaled_size[1] // stride)
    b = torch.as_tensor(gt_boxes, dtype=torch.float32).reshape(-1, 4) * scale
    sizes = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).clamp(min=0).sqrt()
    lab = focus_labels(b, sizes, torch.zeros(len(b), dtype=torch.bool), (hc, wc), stride, (0.0, hand_over), hand_over)
    return (lab == 1).numpy().astype(np.float32)


def run_split(json_path, predictors, cfg, args):
    from sniper_d2.image_io import read_image
    from sniper_d2.inference import autofocus as af

    gt = json.load(open(json_path))
    cat_ids = sorted(c["id"] for c in gt["categories"])
    folder = os.path.dirname(json_path)
    rec = Recorder(predictors["autofocus"])
    hand_over = args.hand_over or float(cfg.SNIPER.AUTOFOCUS.POSITIVE_RANGE[1])
    modes = ["full", "autofocus"] + (["oracle"] if args.oracle_focus else [])
    dets = {m: [] for m in modes}
    pixels = {m: np.zeros(len(predictors["full"].params.scales)) for m in modes}
    missed, fps, found = [], {m: {} for m in modes}, {m: 0 for m in modes}
    n_gt = 0
    real_stitch = af.stitch_focus_map
    for entry in gt["images"]:
        image = read_image(os.path.join(folder, "images", entry["file_name"]), format=cfg.INPUT.FORMAT)
        h, w = image.shape[:2]
        anns = [a for a in gt["annotations"] if a["image_id"] == entry["id"] and not a.get("iscrowd", 0)]
        gtb = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        gtb[:, 2:] += gtb[:, :2]
        gtc = np.array([cat_ids.index(a["category_id"]) for a in anns], np.int64)
        n_gt += len(gtb)
        out = {}
        full, full_parts = full_by_scale(predictors["full"], image)
        out["full"] = (full, source_scale(full["boxes"], full_parts), None)
        pixels["full"] += af.full_inference_pixels((h, w), predictors["full"].params)
        a = predictors["autofocus"](image)
        scales_run = [i for i in range(len(a["pixels"])) if a["pixels"][i] > 0]
        # parts come coarse to fine: match them to the scales that ran, by increasing resize factor
        from sniper_d2.chips import resolve_scale
        res = [resolve_scale(e, (h, w), predictors["full"].params.fit_size) for e in predictors["full"].params.scales]
        run_order = sorted(scales_run, key=lambda i: res[i])
        out["autofocus"] = (a, source_scale(a["boxes"], list(zip(run_order, rec.parts))), a["autofocus"])
        pixels["autofocus"] += a["pixels"]
        if args.oracle_focus:
            def oracle_stitch(windows, outputs, scaled_size, _gtb=gtb, _h=h):
                fmap, stride = real_stitch(windows, outputs, scaled_size)
                return gt_focus_map(_gtb, scaled_size, stride, scaled_size[0] / _h, hand_over), stride
            af.stitch_focus_map = oracle_stitch
            try:
                o = predictors["autofocus"](image)
            finally:
                af.stitch_focus_map = real_stitch
            scales_run = [i for i in range(len(o["pixels"])) if o["pixels"][i] > 0]
            out["oracle"] = (o, source_scale(o["boxes"], list(zip(sorted(scales_run, key=lambda i: res[i]), rec.parts))),
                             o["autofocus"])
            pixels["oracle"] += o["pixels"]
        best = {}
        for m in modes:
            det, src, _ = out[m]
            for box, score, cls in zip(det["boxes"].numpy(), det["scores"].tolist(), det["classes"].tolist()):
                dets[m].append({"image_id": entry["id"], "category_id": cat_ids[cls],
                                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                                "score": float(score)})
            b, arg, kept, tp = match(gtb, gtc, det, args.score)
            best[m] = (b, arg)
            found[m] += int((b >= 0.5).sum())
            fp_idx = kept[~tp]
            for s_idx in src[fp_idx]:
                fps[m].setdefault(int(s_idx), [0, 0])[0] += 1
            if m != "full" and len(fp_idx):
                chips = out[m][2]["chips"]
                for s_idx in np.unique(src[fp_idx]):
                    if s_idx in chips:
                        sel = fp_idx[src[fp_idx] == s_idx]
                        fps[m][int(s_idx)][1] += int(touches_chip_side(det["boxes"].numpy()[sel], chips[s_idx], (h, w)).sum())
        fb, farg = best["full"]
        ab, _ = best["autofocus"]
        fsrc = out["full"][1]
        chips, maps = out["autofocus"][2]["chips"], out["autofocus"][2]["maps"]
        for g in np.flatnonzero((fb >= 0.5) & (ab < 0.5)):
            s_idx = int(fsrc[farg[g]])
            coarser = [i for i in maps if res[i] < res[s_idx]]
            parent = max(coarser, key=lambda i: res[i]) if coarser else None
            size = float(np.sqrt((gtb[g, 2] - gtb[g, 0]) * (gtb[g, 3] - gtb[g, 1])))
            missed.append({"image": entry["id"], "size": size, "scale": s_idx,
                           "coverage": coverage(gtb[g], chips.get(s_idx)),
                           "parent_focus": map_max(maps, parent, gtb[g]) if parent is not None else float("nan"),
                           "parent_run": coverage(gtb[g], chips.get(parent)) if parent is not None else "-",
                           "iou_auto": float(ab[g]), "iou_full": float(fb[g])})
    return {"dets": dets, "pixels": pixels, "missed": missed, "fps": fps, "found": found, "n_gt": n_gt}


def ap_table(json_path, dets):
    import contextlib
    import io

    from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_path)
        out = {}
        for name, lo, hi in [("all", 0, 1e9)] + [(f"{lo}-{hi if hi < 1e9 else 'inf'}", lo, hi) for lo, hi in BANDS]:
            if not dets:
                out[name] = (0.0, 0.0, 0.0)
                continue
            ev = COCOevalMaxDets(gt, gt.loadRes(dets), "bbox")
            ev.params.maxDets = [1, 10, 500]
            ev.params.areaRng = [[lo ** 2, hi ** 2]] * 4
            ev.params.areaRngLbl = ["all", "small", "medium", "large"]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out[name] = tuple(100 * float(v) for v in ev.stats[:3])
    return out


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg, predictors = build(args)
    p = predictors["autofocus"].params
    print(f"scales {p.scales}; thresholds {p.focus_thresholds}, dilations {p.focus_dilations}, "
          f"min chips {p.focus_min_chip_sizes}; found/FP at score >= {args.score}")
    for json_path in args.json:
        r = run_split(json_path, predictors, cfg, args)
        print(f"\n== {json_path}: {r['n_gt']} objects")
        for m, dets in r["dets"].items():
            t = ap_table(json_path, dets)
            bands = "  ".join(f"{k}: {v[0]:5.1f}" for k, v in t.items() if k != "all")
            print(f"{m:<9s} AP {t['all'][0]:5.2f} AP50 {t['all'][1]:5.2f} AP75 {t['all'][2]:5.2f} | AP by size {bands} | "
                  f"found {r['found'][m]} | Mpx {r['pixels'][m].sum() / 1e6:.1f} "
                  f"({' '.join(f'{v / 1e6:.1f}' for v in r['pixels'][m])}) | FP per scale "
                  f"{ {k: v[0] for k, v in sorted(r['fps'][m].items())} }"
                  + (f" of which touching an inner chip side { {k: v[1] for k, v in sorted(r['fps'][m].items())} }"
                     if m != "full" else ""))
        print(f"found by full, missed by AutoFocus: {len(r['missed'])}")
        for mi in sorted(r["missed"], key=lambda d: d["size"]):
            print(f"  image {mi['image']:3d} size {mi['size']:6.1f} px  full found it at scale {mi['scale']}  "
                  f"AutoFocus: {mi['coverage']:<8s} parent scale ran: {mi['parent_run']:<8s} parent focus max {mi['parent_focus']:.3f}  "
                  f"IoU full {mi['iou_full']:.2f} auto {mi['iou_auto']:.2f}")


if __name__ == "__main__":
    main()
