#!/usr/bin/env python
"""COCO AP of each merge method (nms, nested_nms, soft_nms) on the same detections, side by side.

For each trained model (one per seed) and each data set, every image goes through the tiles and
scales once (``MultiScaleTiledPredictor.detect_unmerged``); the same unmerged detections are then
merged by each method and scored by the evaluator ``train_net.py`` uses (SniperCOCOEvaluator).
Also counts the nested duplicates left per image: same-class pairs of kept boxes with score >= 0.3
where one lies >= 90% inside the other. Prints mean and spread over the models.

Example (three demo models trained with SEED 0, 1, 2):
    python benchmarks/merge_ap.py --config-file configs/sniper_tiny_cpu.yaml \
        --weights out/s0/model_final.pth out/s1/model_final.pth out/s2/model_final.pth \
        --dataset synthetic_val datasets/synthetic/val.json --dataset synthetic_clutter datasets/synthetic/clutter.json
"""

import argparse
import os
import sys
from collections import defaultdict
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.cli import parse_with_overrides  # noqa: E402

METHODS = ("nms", "nested_nms", "soft_nms")


def nested_pairs(boxes, classes, min_inside=0.9):
    """Same-class pairs (i < j) where the intersection covers >= min_inside of the smaller box."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    smaller = np.minimum(area[:, None], area[None, :])
    same = np.asarray(classes)[:, None] == np.asarray(classes)[None, :]
    hit = same & (inter >= min_inside * np.maximum(smaller, 1e-9)) & (inter > 0)
    return int(np.triu(hit, 1).sum())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", nargs="+", required=True, help="one trained model per seed")
    p.add_argument("--dataset", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE pairs")
    args = parse_with_overrides(p)

    import torch
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog
    from detectron2.structures import Boxes, Instances

    from sniper_d2.config import add_sniper_config
    from sniper_d2.data.datasets import register_coco_json
    from sniper_d2.image_io import read_image
    from sniper_d2.inference.evaluation import SniperCOCOEvaluator
    from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams
    from sniper_d2.inference.fast_model import build_inference_model

    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    for name, json_file in args.dataset:
        if name not in DatasetCatalog.list():
            register_coco_json(name, json_file)
    params = TiledInferenceParams.from_cfg(cfg)
    table = defaultdict(list)  # (dataset, method) -> [(AP, AP50, APs, nested per image)] over models
    for weights in args.weights:
        model = build_inference_model(cfg, weights)  # as tools/infer.py runs it
        predictors = {m: MultiScaleTiledPredictor(model, replace(params, merge_method=m)) for m in METHODS}
        for name, _ in args.dataset:
            evaluators = {m: SniperCOCOEvaluator(name, max_dets_per_image=params.max_detections, distributed=False)
                          for m in METHODS}
            nested = defaultdict(int)
            for e in evaluators.values():
                e.reset()
            dicts = DatasetCatalog.get(name)
            for d in dicts:
                image = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
                parts = predictors["nms"].detect_unmerged(image)
                for m, predictor in predictors.items():
                    det = predictor.merge(parts)
                    inst = Instances(image.shape[:2])
                    inst.pred_boxes, inst.scores, inst.pred_classes = Boxes(det["boxes"]), det["scores"], det["classes"]
                    evaluators[m].process([d], [{"instances": inst}])
                    sure = det["scores"] >= 0.3
                    nested[m] += nested_pairs(det["boxes"][sure].numpy(), det["classes"][sure].numpy())
            for m, e in evaluators.items():
                with torch.no_grad():
                    bbox = e.evaluate()["bbox"]
                table[(name, m)].append((bbox["AP"], bbox["AP50"], bbox["APs"], nested[m] / len(dicts)))

    print(f"\nmerge methods on the same unmerged detections; {len(args.weights)} models "
          f"({', '.join(args.weights)}); mean ± std over models")
    print(f"  {'data set':<20s} {'method':<11s} {'AP':>13s} {'AP50':>13s} {'APs':>13s} {'nested pairs/img':>17s}")
    for name, _ in args.dataset:
        for m in METHODS:
            v = np.array(table[(name, m)])
            cells = [f"{v[:, k].mean():6.2f} ± {v[:, k].std():4.2f}" for k in range(4)]
            print(f"  {name:<20s} {m:<11s} {cells[0]:>13s} {cells[1]:>13s} {cells[2]:>13s} {cells[3]:>17s}")
            print(f"  {'':<20s} {'':<11s} per model AP: {', '.join(f'{a:.2f}' for a in v[:, 0])}")


if __name__ == "__main__":
    main()
