#!/usr/bin/env python
"""The end-to-end CPU demo on the synthetic data set (what ``bash scripts/demo.sh`` runs).

Steps, each a command a user could run by hand (printed before it runs); steps 2-4 are the README's
"Using sniper_d2 on your data" path:
  1. generate the synthetic data set (tools/make_synthetic_dataset.py);
  2. derive the configs from the training json (tools/compute_scale_stats.py: sniper.yaml with the
     suggested scales, classes, data sets and detection cap; baseline.yaml, the single-scale
     baseline at equal training pixels per iteration; sliced.yaml, plain slicing: every tile at one
     scale, as many chips per iteration; all with configs/sniper_tiny_cpu.yaml as base);
  3. train SNIPER on positive chips (--iters from scratch) and evaluate it with multi-scale tiled
     inference; train slicing and the baseline the same way: SNIPER against slicing and against
     single-scale training at equal cost;
  4. dump the RPN proposals of the step-3 SNIPER model (the weak detector) over the training set
     (tools/dump_proposals.py);
  5. continue the step-3 model for --neg-iters more, twice: on positive chips only, and with negative
     chips mined from the proposals; evaluate both (they differ only in the negative chips);
  6. print the COCO AP tables side by side, and false positives per image on a distractor-heavy
     split (20-40 look-alike non-objects per image), with and without negative chips;
  7. draw the final model's detections on the validation images (tools/infer.py), one box per
     object (nested_nms and the cross-class merge).
Everything lands under ``--output`` (default ``output/demo``). One run per model: for mean and spread
over seeds, see benchmarks/bench_accuracy.py.

Budget: about 13.5 minutes on 2 idle CPU cores with the defaults, set-up included (estimated from the
step times of the 300 + 150 iteration demo, 14 min 48 s: 3 x 180 iterations from scratch and 2 x 90
continuing at 0.45-0.75 s per iteration, each model then evaluated on 12 images in 30-50 s; set-up,
data, proposal dump and drawing about 2 minutes).

Example:
    python tools/demo.py --iters 180 --neg-iters 90
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from lab import experiment as ex  # noqa: E402
from sniper_d2.coco import load_coco_records  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/demo", help="output folder (default: %(default)s)")
    p.add_argument("--data", default="datasets/synthetic", help="synthetic data folder (default: %(default)s)")
    p.add_argument("--iters", type=int, default=180,
                   help="iterations of SNIPER, slicing and the baseline, from scratch (default: %(default)s)")
    p.add_argument("--neg-iters", type=int, default=90,
                   help="iterations that continue SNIPER with and without negative chips (default: %(default)s)")
    p.add_argument("--train-images", type=int, default=16, help="synthetic training images (default: %(default)s)")
    p.add_argument("--val-images", type=int, default=6, help="synthetic validation images (default: %(default)s)")
    p.add_argument("--clutter-images", type=int, default=6,
                   help="distractor-heavy images on which false positives are counted (default: %(default)s)")
    p.add_argument("--min-side", type=int, default=700, help="smallest image side, px (default: %(default)s)")
    p.add_argument("--max-side", type=int, default=1200, help="largest image side, px (default: %(default)s)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    py = sys.executable
    ex.run([py, "tools/make_synthetic_dataset.py", "--output", args.data, "--train", str(args.train_images),
            "--val", str(args.val_images), "--clutter", str(args.clutter_images),
            "--min-side", str(args.min_side), "--max-side", str(args.max_side)])

    jsons = [os.path.join(args.data, f"{split}.json") for split in ("train", "val", "clutter")]
    configs = ex.make_configs(jsons[0], jsons[1:], "configs/sniper_tiny_cpu.yaml",
                              os.path.join(args.output, "configs"), "synthetic")
    sniper_cfg = configs["sniper"]
    sniper_out = ex.train(sniper_cfg, os.path.join(args.output, "sniper"), args.iters)
    sliced_out = ex.train(configs["sliced"], os.path.join(args.output, "sliced"), args.iters)
    baseline_out = ex.train(configs["baseline"], os.path.join(args.output, "baseline"), args.iters)
    weak_weights = os.path.join(sniper_out, "model_final.pth")
    proposals = ex.dump_proposals(sniper_cfg, sniper_out, weak_weights, os.path.join(args.output, "proposals.npz"))
    pos_out = ex.train(sniper_cfg, os.path.join(args.output, "sniper_pos_more"), args.neg_iters,
                       "MODEL.WEIGHTS", weak_weights)
    neg_out = ex.train(sniper_cfg, os.path.join(args.output, "sniper_neg"), args.neg_iters,
                       "MODEL.WEIGHTS", weak_weights, "SNIPER.NEG.PROPOSALS_FILE", proposals)

    total = args.iters + args.neg_iters
    models = {f"single-scale baseline ({args.iters})": baseline_out,
              f"sliced, every tile at one scale ({args.iters})": sliced_out,
              f"SNIPER ({args.iters})": sniper_out,
              f"SNIPER, positive chips ({total})": pos_out,
              f"SNIPER, + negative chips ({total})": neg_out}
    tables = {name: ex.bbox_results(out, "synthetic_val") for name, out in models.items()}
    print("\nCOCO box AP on the synthetic validation set (training iterations in parentheses; equal training "
          "pixels per iteration):")
    print(ex.format_side_by_side(tables))

    records, _ = load_coco_records(os.path.join(args.data, "clutter.json"))
    print(f"\nFalse positives per image on the distractor-heavy split ({len(records)} images; a false positive "
          "has IoU < 0.5 with every object), at a fixed score and at equal recall (which does not depend on "
          "how each model's scores are calibrated):")
    print(f"  {'model':<44s} {'score >= 0.5':>14s} {'recall':>7s} {'at 50% recall':>14s} {'on distractors':>15s}")
    for name, out in models.items():
        fp = ex.clutter_false_positives(out, "synthetic_clutter", records)
        fixed, matched = fp["fixed"], fp["at_recall"]
        at_recall = f"{matched['fp_per_image']:.2f}" if matched["reached"] else "never reached"
        print(f"  {name:<44s} {fixed['fp_per_image']:14.2f} {fixed['recall']:7.2f} {at_recall:>14s} "
              f"{matched['fp_on_distractors_per_image']:15.2f}")

    # Pictures for a person: one box per object (nested fragments and a second class on the same
    # object removed; benchmarks/merge_ap.py measures what each costs in AP, where the defaults above
    # are used), drawn by sniper_d2.visualize (class colours, legend, labels that never overprint).
    drawn = os.path.join(args.output, "detections")
    ex.run([py, "tools/infer.py", "--config-file", sniper_cfg,
            "--input", os.path.join(args.data, "images", "val_*.jpg"), "--output", drawn,
            "--confidence-threshold", "0.5", "MODEL.WEIGHTS", os.path.join(neg_out, "model_final.pth"),
            "SNIPER.TEST.MERGE_METHOD", "nested_nms", "SNIPER.TEST.CROSS_CLASS_IOU", "0.5"])
    print(f"\nDone. Results: {args.output}/*/eval_results.json; drawn detections: {drawn}/")


if __name__ == "__main__":
    try:
        main()
    except ex.StepFailed as e:
        sys.exit(f"demo: {e}")
