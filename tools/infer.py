#!/usr/bin/env python
r"""Run a SNIPER model on images or folders: detections drawn on each image, plus one COCO results json.

Multi-scale tiled inference as in evaluation (cfg.SNIPER.TEST: scales, tiles, merge). Unreadable
files are skipped with a warning naming them, and counted. Written to --output:
  <stem>.jpg           each image with its detections (score >= --confidence-threshold) drawn
                       ("<stem>_2.jpg", ... when two inputs share a stem);
  results.json         COCO "results" format, written atomically: a list of {"image_id" (1-based
                       position in the input list), "file_name", "category_id" (the data set's ids when
                       the config's data set is registered, else contiguous), "bbox" XYWH original
                       pixels, "score"}, detections with score >= --confidence-threshold;
  results_meta.json    sidecar (sniper_d2.io artifact, format "sniper_d2.infer_results", version 1):
                       weights, config file, images, skipped files, detections, threshold, and
                       "pixels_per_scale": {file: pixels through the detector per SNIPER.TEST.SCALES entry};
  <stem>_focus.jpg     with --draw-focus (SNIPER.TEST.MODE "autofocus"): the focus maps (red) and the
                       focus chips of each finer scale (boxes labelled with the scale) over the image.

Examples:
    python tools/infer.py --config-file configs/sniper_tiny_cpu.yaml --input datasets/synthetic/images \
        --output output/drawn MODEL.WEIGHTS output/demo/sniper/model_final.pth
    python tools/infer.py --config-file configs/sniper_r50_fpn.yaml --input 'photos/*.jpg' \
        --output output/drawn --confidence-threshold 0.5 MODEL.WEIGHTS model_final.pth
"""

import argparse
import glob
import json
import logging
import os
import sys

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.cli import run_main, setup_cfg  # noqa: E402

_PALETTE = [(0, 200, 255), (255, 120, 0), (60, 220, 60), (220, 60, 220), (255, 255, 0), (0, 80, 255)]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
logger = logging.getLogger("sniper_d2.infer")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="detectron2 yaml config with a SNIPER section")
    p.add_argument("--input", required=True, nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--output", required=True, help="folder for drawn images and results.json")
    p.add_argument("--confidence-threshold", type=float, default=0.5,
                   help="draw and save detections at least this confident (default: %(default)s)")
    p.add_argument("--no-draw", action="store_true", help="only write results.json")
    p.add_argument("--draw-focus", action="store_true",
                   help="with SNIPER.TEST.MODE autofocus: also write <stem>_focus.jpg, where the model zoomed in")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE pairs")
    return p.parse_args(argv)


def list_inputs(patterns):
    """Expand files, folders (their images, sorted) and globs, in order, without repeats; a pattern
    matching nothing is an error."""
    files = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = sorted(os.path.join(pattern, f) for f in os.listdir(pattern) if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(glob.glob(pattern))
        if not found:
            raise FileNotFoundError(f"--input {pattern}: no such file, or no image in it")
        files += found
    return list(dict.fromkeys(files))  # a file named twice is run once


def output_names(files):
    """{input path: drawn image name}: "<stem>.jpg", with "_2", "_3", ... where stems repeat
    (a/x.png and b/x.jpg must not overwrite each other)."""
    names, used = {}, set()
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = f"{stem}.jpg", 1
        while name in used:
            k += 1
            name = f"{stem}_{k}.jpg"
        used.add(name)
        names[path] = name
    return names


def draw(image_bgr, det, class_names, threshold):
    """Boxes with class name and score drawn on a copy of the image (BGR)."""
    out = image_bgr.copy()
    thickness = max(1, round(max(out.shape[:2]) / 800))
    for box, score, cls in zip(det["boxes"].tolist(), det["scores"].tolist(), det["classes"].tolist()):
        if score < threshold:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        color = _PALETTE[cls % len(_PALETTE)]
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thickness)
        label = f"{class_names[cls] if cls < len(class_names) else cls} {score:.2f}"
        cv2.putText(out, label, (x0, max(10, y0 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, color, thickness)
    return out


def main(argv=None):
    args = parse_args(argv)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from detectron2.utils.logger import setup_logger

    import sniper_d2.modeling  # noqa: F401  (registers the heads)
    from sniper_d2.coco import boxes_xyxy_to_xywh
    from sniper_d2.image_io import ImageReadError, read_image
    from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams
    from sniper_d2.io import atomic_open, save_json_artifact

    setup_logger(name="sniper_d2")
    cfg = setup_cfg(args.config_file, args.opts, purpose="infer")
    if not cfg.MODEL.WEIGHTS:
        raise FileNotFoundError("MODEL.WEIGHTS is empty: give the trained model, e.g. MODEL.WEIGHTS output/model_final.pth")
    files = list_inputs(args.input)
    if args.draw_focus and cfg.SNIPER.TEST.MODE != "autofocus":
        raise ValueError("--draw-focus needs SNIPER.TEST.MODE autofocus (and a model with a focus head)")
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    predictor = MultiScaleTiledPredictor(model, TiledInferenceParams.from_cfg(cfg))
    class_names, to_dataset_id = _categories(cfg)
    os.makedirs(args.output, exist_ok=True)

    drawn_names = output_names(files)
    results, skipped, pixels = [], [], {}
    for image_id, path in enumerate(tqdm(files, desc="inference", unit="img"), start=1):
        try:
            image = read_image(path, format=cfg.INPUT.FORMAT)
        except ImageReadError as e:
            logger.warning(f"skipping an unreadable image: {e}")
            skipped.append(path)
            continue
        det = predictor(image)
        pixels[path] = [int(v) for v in det["pixels"]]
        keep = det["scores"] >= args.confidence_threshold
        for box, score, cls in zip(boxes_xyxy_to_xywh(det["boxes"][keep].numpy()), det["scores"][keep].tolist(),
                                   det["classes"][keep].tolist()):
            results.append({"image_id": image_id, "file_name": path, "category_id": to_dataset_id.get(cls, cls),
                            "bbox": [round(float(v), 2) for v in box], "score": round(float(score), 4)})
        if not args.no_draw:
            bgr = image if cfg.INPUT.FORMAT == "BGR" else image[..., ::-1]
            drawn_path = os.path.join(args.output, drawn_names[path])
            if not cv2.imwrite(drawn_path, draw(bgr, det, class_names, args.confidence_threshold)):
                raise OSError(f"{drawn_path}: could not write the drawn image")
        if args.draw_focus:
            from sniper_d2.chips import resolve_scale
            from sniper_d2.inference.autofocus import draw_focus

            scales = [resolve_scale(s, image.shape[:2], cfg.SNIPER.CHIP_SIZE) for s in cfg.SNIPER.TEST.SCALES]
            bgr = image if cfg.INPUT.FORMAT == "BGR" else image[..., ::-1]
            focus_path = os.path.join(args.output, os.path.splitext(drawn_names[path])[0] + "_focus.jpg")
            if not cv2.imwrite(focus_path, draw_focus(bgr, det["autofocus"], scales)):
                raise OSError(f"{focus_path}: could not write the focus picture")

    with atomic_open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f)
    save_json_artifact(os.path.join(args.output, "results_meta.json"), "sniper_d2.infer_results", 1, {
        "weights": cfg.MODEL.WEIGHTS, "config_file": args.config_file, "images": len(files) - len(skipped),
        "skipped": skipped, "detections": len(results), "confidence_threshold": args.confidence_threshold,
        "pixels_per_scale": pixels})
    total = np.sum(list(pixels.values()), axis=0) if pixels else []
    logger.info(f"pixels through the detector per scale {tuple(float(s) for s in cfg.SNIPER.TEST.SCALES)} "
                f"({cfg.SNIPER.TEST.MODE}): {', '.join(f'{v / 1e6:.1f} M' for v in total)}")
    logger.info(f"{len(files) - len(skipped)} images, {len(results)} detections -> {args.output}/results.json"
                + (f"; skipped {len(skipped)} unreadable: {', '.join(skipped)}" if skipped else ""))


def _categories(cfg):
    """(class names by contiguous id, {contiguous id: data set category id}) from the config's data sets."""
    from detectron2.data import MetadataCatalog

    from sniper_d2.data.datasets import register_datasets_from_cfg

    if cfg.SNIPER.REGISTER_COCO and all(os.path.isfile(e[1]) for e in cfg.SNIPER.REGISTER_COCO):
        register_datasets_from_cfg(cfg)
    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    meta = MetadataCatalog.get(names[0]) if names else None
    classes = (meta.get("thing_classes", None) if meta else None) or \
        [str(i) for i in range(cfg.MODEL.ROI_HEADS.NUM_CLASSES)]
    id_map = (meta.get("thing_dataset_id_to_contiguous_id", None) if meta else None) or {}
    return classes, {v: k for k, v in id_map.items()}


if __name__ == "__main__":
    run_main(main, "infer.py")
