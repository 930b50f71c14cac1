#!/usr/bin/env python
"""COCO AP of each merge setting on the same detections, side by side, over several trained models.

Settings: every per-class method (nms, nested_nms, soft_nms) without and with the cross-class step
(``SNIPER.TEST.CROSS_CLASS_IOU``: one box per object, its highest-scoring class). For each model (one
per seed) and each data set, every image goes through the tiles and scales once
(``MultiScaleTiledPredictor.detect_unmerged``); the same unmerged detections are then merged by each
setting and scored by the evaluator ``train_net.py`` uses (SniperCOCOEvaluator). Also counted per image,
among kept detections with score >= 0.3 (what a drawing shows): nested duplicates (same-class pairs
where one box lies >= 90% inside the other: triangle tips boxed inside the triangle) and cross-class
duplicates (pairs of different classes with IoU > 0.5: a square boxed as "square" and "disk").
Prints mean ± std over the models and each model's AP difference to plain per-class NMS, and writes
them to benchmarks/results/merge_ap.json (machine, commit, date).

Models, either given or trained here:
- ``--train-dir DIR``: the demo recipe per seed (tools/demo.py's data sizes, the configs
  tools/compute_scale_stats.py writes, ``--iters`` from scratch, ``SEED`` and ``SNIPER.PLAN.SEED`` =
  the seed), each training a ``train_net.py`` process; a seed whose ``model_final.pth`` exists is
  reused. About 10 minutes per seed on 2 CPU cores at 300 iterations: run under
  ``flock /tmp/sniper_heavy.lock``.
- ``--config-file`` + ``--weights`` (one per seed) + ``--dataset NAME JSON`` (repeatable).

Examples:
    flock /tmp/sniper_heavy.lock python benchmarks/merge_ap.py --train-dir output/merge_ap --seeds 0 1 2
    python benchmarks/merge_ap.py --config-file configs/sniper_tiny_cpu.yaml \
        --weights out/s0/model_final.pth out/s1/model_final.pth out/s2/model_final.pth \
        --dataset synthetic_val datasets/synthetic/val.json
"""

import argparse
import os
import sys
from collections import defaultdict
from dataclasses import replace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from results_store import add_results_argument, save_benchmark_results  # noqa: E402
from sniper_d2 import experiment as ex  # noqa: E402
from sniper_d2.cli import parse_with_overrides  # noqa: E402

METHODS = ("nms", "nested_nms", "soft_nms")
SURE = 0.3  # duplicates are counted among detections at least this confident
METRICS = ("AP", "AP50", "APs", "nested/img", "cross/img")


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


def cross_class_pairs(boxes, classes, min_iou=0.5):
    """Pairs (i < j) of different classes whose IoU exceeds ``min_iou``: one object, two classes."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9)
    other = np.asarray(classes)[:, None] != np.asarray(classes)[None, :]
    return int(np.triu(other & (iou > min_iou), 1).sum())


def setting_name(method, cross_iou):
    return method if cross_iou is None else f"{method} + cross {cross_iou:g}"


def train_models(out, seeds, iters):
    """The demo recipe, one model per seed (reused where ``model_final.pth`` exists).

    Returns:
        (config path, [weights per seed], [(data set name, json)]).
    """
    py, data = sys.executable, os.path.join(out, "data")
    if not os.path.isfile(os.path.join(data, "clutter.json")):
        ex.run([py, "tools/make_synthetic_dataset.py", "--output", data, "--train", "16", "--val", "6",
                "--clutter", "6", "--min-side", "700", "--max-side", "1200"], quiet=True)
    jsons = {split: os.path.join(data, f"{split}.json") for split in ("train", "val", "clutter")}
    configs = ex.make_configs(jsons["train"], [jsons["val"], jsons["clutter"]], "configs/sniper_tiny_cpu.yaml",
                              os.path.join(out, "configs"), "synthetic", quiet=True)
    weights = []
    for seed in seeds:
        run_dir = os.path.join(out, f"seed{seed}")
        if not os.path.isfile(os.path.join(run_dir, "model_final.pth")):
            # No evaluation inside training: the models are scored here, under every merge setting.
            ex.train(configs["sniper"], run_dir, iters, *ex.seed_opts(seed), "DATASETS.TEST", "()", quiet=True)
        weights.append(os.path.join(run_dir, "model_final.pth"))
    return configs["sniper"], weights, [("synthetic_val", jsons["val"]), ("synthetic_clutter", jsons["clutter"])]


def evaluate(config_file, opts, weights_list, datasets, settings):
    """Per (data set, setting), per model: [AP, AP50, APs, nested pairs / image, cross pairs / image]."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog
    from detectron2.structures import Boxes, Instances
    from tqdm import tqdm

    from sniper_d2.config import add_sniper_config
    from sniper_d2.data.datasets import register_coco_json
    from sniper_d2.image_io import read_image
    from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams
    from sniper_d2.inference.evaluation import SniperCOCOEvaluator
    from sniper_d2.inference.fast_model import build_inference_model

    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    for name, json_file in datasets:
        if name not in DatasetCatalog.list():
            register_coco_json(name, json_file)
    params = TiledInferenceParams.from_cfg(cfg)
    table = defaultdict(list)
    for weights in weights_list:
        model = build_inference_model(cfg, weights)  # as tools/infer.py runs it
        predictors = {s: MultiScaleTiledPredictor(model, replace(params, merge_method=s[0],
                                                                 cross_class_iou=s[1] or -1.0)) for s in settings}
        for name, _ in datasets:
            evaluators = {s: SniperCOCOEvaluator(name, max_dets_per_image=params.max_detections, distributed=False)
                          for s in settings}
            nested, cross = defaultdict(int), defaultdict(int)
            for e in evaluators.values():
                e.reset()
            dicts = DatasetCatalog.get(name)
            for d in tqdm(dicts, desc=f"{os.path.basename(os.path.dirname(weights))} {name}", leave=False):
                image = read_image(d["file_name"], format=cfg.INPUT.FORMAT)
                with torch.no_grad():
                    parts = predictors[settings[0]].detect_unmerged(image)
                for s, predictor in predictors.items():
                    det = predictor.merge(parts)
                    inst = Instances(image.shape[:2])
                    inst.pred_boxes, inst.scores, inst.pred_classes = Boxes(det["boxes"]), det["scores"], det["classes"]
                    evaluators[s].process([d], [{"instances": inst}])
                    sure = det["scores"] >= SURE
                    nested[s] += nested_pairs(det["boxes"][sure].numpy(), det["classes"][sure].numpy())
                    cross[s] += cross_class_pairs(det["boxes"][sure].numpy(), det["classes"][sure].numpy())
            for s, e in evaluators.items():
                bbox = e.evaluate()["bbox"]
                table[(name, s)].append([bbox["AP"], bbox["AP50"], bbox["APs"], nested[s] / len(dicts),
                                         cross[s] / len(dicts)])
    return table


def report(table, datasets, settings, weights_list):
    """Print the tables; return them as a JSON-able dict."""
    figures = {"models": list(weights_list), "score_for_duplicates": SURE, "datasets": {}}
    base = settings[0]
    print(f"\nmerge settings on the same unmerged detections; {len(weights_list)} models; mean ± std over models "
          f"(duplicates among detections with score >= {SURE}); ΔAP: each model's AP minus its "
          f"{setting_name(*base)} AP")
    print(f"  {'data set':<18s} {'setting':<24s} " + " ".join(f"{m:>13s}" for m in METRICS) + "  ΔAP per model")
    for name, _ in datasets:
        figures["datasets"][name] = {}
        ref = np.array(table[(name, base)])[:, 0]
        for s in settings:
            v = np.array(table[(name, s)])
            delta = v[:, 0] - ref
            cells = [f"{v[:, k].mean():6.2f} ± {v[:, k].std(ddof=1) if len(v) > 1 else 0:4.2f}"
                     for k in range(len(METRICS))]
            print(f"  {name:<18s} {setting_name(*s):<24s} " + " ".join(f"{c:>13s}" for c in cells)
                  + "  " + ", ".join(f"{d:+.2f}" for d in delta))
            figures["datasets"][name][setting_name(*s)] = {
                **{m: {"mean": float(v[:, k].mean()), "std": float(v[:, k].std(ddof=1)) if len(v) > 1 else 0.0,
                       "per_model": [float(x) for x in v[:, k]]} for k, m in enumerate(METRICS)},
                "delta_AP_per_model": [float(d) for d in delta]}
    return figures


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-dir", help="train the demo recipe per seed here (reusing finished seeds)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="with --train-dir (default: %(default)s)")
    p.add_argument("--iters", type=int, default=300,
                   help="with --train-dir: iterations per model (default: %(default)s)")
    p.add_argument("--config-file", help="the models' config (without --train-dir)")
    p.add_argument("--weights", nargs="+", help="one trained model per seed (without --train-dir)")
    p.add_argument("--dataset", nargs=2, action="append", metavar=("NAME", "JSON"),
                   help="data set to score on, repeatable (without --train-dir)")
    p.add_argument("--cross-class-iou", type=float, nargs="+", default=[0.5, 0.7],
                   help="cross-class IoU thresholds to measure (default: %(default)s)")
    add_results_argument(p, "merge_ap")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE pairs")
    args = parse_with_overrides(p)
    if args.train_dir:
        config_file, weights, datasets = train_models(os.path.abspath(args.train_dir), args.seeds, args.iters)
    elif args.config_file and args.weights and args.dataset:
        config_file, weights, datasets = args.config_file, args.weights, args.dataset
    else:
        p.error("give --train-dir, or --config-file, --weights and --dataset")
    settings = [(m, c) for m in METHODS for c in [None] + list(args.cross_class_iou)]
    table = evaluate(config_file, args.opts, weights, datasets, settings)
    figures = report(table, datasets, settings, weights)
    save_benchmark_results("merge_ap", figures, args.results)


if __name__ == "__main__":
    try:
        main()
    except ex.StepFailed as e:
        sys.exit(f"merge_ap: {e}")
