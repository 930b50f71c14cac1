#!/usr/bin/env python
"""COCO AP and speed of multi-scale tiled inference in each forward-pass precision, side by side.

Every model (one per training seed) is evaluated on every data set in each ``--precisions`` entry
(``SNIPER.TEST.PRECISION``: fp32, bf16, ...) through the evaluation path ``train_net.py --eval-only``
uses (:func:`sniper_d2.inference.evaluation.run_sniper_inference_on_dataset`: the tile pipeline and
SniperCOCOEvaluator), with the model prepared as ``tools/infer.py`` prepares it for each precision (batch norms folded,
channels-last, backbone weights in that precision). Precisions alternate per data set, so drifting machine load hits them alike.
Prints AP, AP50, APs and seconds per image, mean ± std over models, and the per-model AP
difference of each precision from the first.

Example (three models of configs/sniper_tiny_cpu.yaml trained with SEED 0, 1, 2):
    python benchmarks/precision_ap.py --config-file configs/sniper_tiny_cpu.yaml \
        --weights out/s0/model_final.pth out/s1/model_final.pth out/s2/model_final.pth \
        --dataset synthetic_val datasets/synthetic/val.json --precisions fp32 bf16
"""

import argparse
import contextlib
import io
import os
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.cli import parse_with_overrides  # noqa: E402
from results_store import add_results_argument, save_benchmark_results  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True)
    p.add_argument("--weights", nargs="+", required=True, help="one trained model per seed")
    p.add_argument("--dataset", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   help="SNIPER.TEST.PRECISION values; differences are from the first (default: %(default)s)")
    add_results_argument(p, "precision_ap")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides, KEY VALUE pairs")
    return parse_with_overrides(p, argv)


def main(argv=None):
    args = parse_args(argv)
    from detectron2.data import DatasetCatalog

    from sniper_d2.cli import setup_cfg
    from sniper_d2.data.datasets import register_coco_json
    from sniper_d2.inference.evaluation import run_sniper_inference_on_dataset
    from sniper_d2.inference.fast_model import build_inference_model
    from sniper_d2.inference.precision import resolve_precision

    cfg = setup_cfg(args.config_file, args.opts, purpose="read")
    for name, json_file in args.dataset:
        if name not in DatasetCatalog.list():
            register_coco_json(name, json_file)
    resolved = {p: resolve_precision(p, cfg.MODEL.DEVICE.split(":")[0]) for p in args.precisions}
    table = defaultdict(list)  # (data set, precision) -> [(AP, AP50, APs, s/image)] over models
    for weights in args.weights:
        prepared = {p: build_inference_model(cfg, weights, precision=p) for p in args.precisions}
        for name, _ in args.dataset:
            n_images = len(DatasetCatalog.get(name))
            for precision in args.precisions:
                run_cfg = cfg.clone()
                run_cfg.defrost()
                run_cfg.SNIPER.TEST.PRECISION = precision
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):  # COCOeval's summary table
                    bbox = run_sniper_inference_on_dataset(run_cfg, prepared[precision], name)["bbox"]
                seconds = (time.perf_counter() - start) / n_images
                table[(name, precision)].append((bbox["AP"], bbox["AP50"], bbox["APs"], seconds))
                print(f"{weights} {name} {precision} ({resolved[precision]}): AP {bbox['AP']:.2f} "
                      f"AP50 {bbox['AP50']:.2f} APs {bbox['APs']:.2f}, {seconds:.2f} s/image", flush=True)

    first = args.precisions[0]
    print(f"\nforward-pass precision, {len(args.weights)} models; mean ± std over models "
          f"(as resolved here: {', '.join(f'{k} -> {v}' for k, v in resolved.items())})")
    print(f"  {'data set':<20s} {'precision':<9s} {'AP':>13s} {'AP50':>13s} {'APs':>13s} {'s/image':>13s}"
          f"  AP - {first} per model")
    for name, _ in args.dataset:
        base = np.array(table[(name, first)])
        for precision in args.precisions:
            v = np.array(table[(name, precision)])
            cells = [f"{v[:, k].mean():6.2f} ± {v[:, k].std():4.2f}" for k in range(4)]
            diffs = ", ".join(f"{d:+.2f}" for d in v[:, 0] - base[:, 0])
            print(f"  {name:<20s} {precision:<9s} {cells[0]:>13s} {cells[1]:>13s} {cells[2]:>13s} {cells[3]:>13s}"
                  f"  {diffs}")
    figures = {"weights": args.weights, "resolved": resolved, "runs": {
        f"{name}/{precision}": [dict(zip(("AP", "AP50", "APs", "seconds_per_image"), row)) for row in rows]
        for (name, precision), rows in table.items()}}
    for precision in args.precisions[1:]:
        d = np.concatenate([np.array(table[(n, precision)])[:, 0] - np.array(table[(n, first)])[:, 0]
                            for n, _ in args.dataset])
        t = sum(np.array(table[(n, first)])[:, 3].sum() for n, _ in args.dataset) / \
            sum(np.array(table[(n, precision)])[:, 3].sum() for n, _ in args.dataset)
        print(f"precision: {precision} vs {first}: AP {d.mean():+.2f} ± {d.std():.2f} over {len(d)} model x data set "
              f"pairs; {t:.2f}x faster")
        figures[f"{precision}_vs_{first}"] = {"ap_diff_mean": float(d.mean()), "ap_diff_std": float(d.std()),
                                              "pairs": len(d), "speedup": float(t)}
    save_benchmark_results("precision_ap", figures, args.results)


if __name__ == "__main__":
    main()
