#!/usr/bin/env python
"""The end-to-end CPU demo on the synthetic data set (what ``bash scripts/demo.sh`` runs).

Steps, each a command a user could run by hand (printed before it runs):
  1. generate the synthetic data set (tools/make_synthetic_dataset.py);
  2. train SNIPER on positive chips (configs/sniper_tiny_cpu.yaml, --iters from scratch) and
     evaluate it with multi-scale tiled inference;
  3. train the single-scale baseline (configs/faster_rcnn_tiny_cpu.yaml, --iters from scratch, the
     same training pixels per iteration) and evaluate it: step 2 against step 3 is SNIPER against
     single-scale training at equal cost;
  4. dump the RPN proposals of the step-2 model (the weak detector) over the training set
     (tools/dump_proposals.py);
  5. continue the step-2 model for --neg-iters more, twice: on positive chips only, and with negative
     chips mined from the proposals; evaluate both (they differ only in the negative chips);
  6. print the COCO AP tables side by side, and false positives per image on a distractor-heavy
     split (20-40 look-alike non-objects per image), with and without negative chips;
  7. draw the final model's detections on the validation images (tools/infer.py).
Everything lands under ``--output`` (default ``output/demo``).

Example:
    python tools/demo.py --iters 300 --neg-iters 150
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from sniper_d2.analysis import false_positive_stats, false_positives_at_recall, load_coco_results  # noqa: E402
from sniper_d2.coco import load_coco_records  # noqa: E402
from sniper_d2.results import format_side_by_side, load_eval_results  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/demo", help="output folder (default: %(default)s)")
    p.add_argument("--data", default="datasets/synthetic", help="synthetic data folder (default: %(default)s)")
    p.add_argument("--iters", type=int, default=300,
                   help="iterations of SNIPER and of the baseline, from scratch (default: %(default)s)")
    p.add_argument("--neg-iters", type=int, default=150,
                   help="iterations that continue SNIPER with and without negative chips (default: %(default)s)")
    p.add_argument("--train-images", type=int, default=16, help="synthetic training images (default: %(default)s)")
    p.add_argument("--val-images", type=int, default=6, help="synthetic validation images (default: %(default)s)")
    p.add_argument("--clutter-images", type=int, default=6,
                   help="distractor-heavy images on which false positives are counted (default: %(default)s)")
    p.add_argument("--min-side", type=int, default=700, help="smallest image side, px (default: %(default)s)")
    p.add_argument("--max-side", type=int, default=1200, help="largest image side, px (default: %(default)s)")
    return p.parse_args(argv)


def run(cmd):
    """Run one step, echoing the command; a failing step stops the demo with its exit code."""
    print("\n$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        sys.exit(f"demo: this step failed (its output is above): {' '.join(cmd[:3])} ...")
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)


def data_opts(args):
    """Config overrides that register the demo's data sets and evaluate on val + clutter."""
    train, val, clutter = (os.path.join(args.data, f"{split}.json") for split in ("train", "val", "clutter"))
    return ["SNIPER.REGISTER_COCO", f'(("synthetic_train", "{train}", ""), ("synthetic_val", "{val}", ""), '
                                    f'("synthetic_clutter", "{clutter}", ""))',
            "DATASETS.TEST", '("synthetic_val", "synthetic_clutter")']


def schedule_opts(iters):
    """A schedule of ``iters`` iterations: warm-up, LR drops at 80% and 93% (distinct, inside it)."""
    steps = tuple(sorted({int(iters * 0.8), int(iters * 0.93)} - {0}))
    return ["SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", str(steps), "SOLVER.CHECKPOINT_PERIOD", str(iters),
            "SOLVER.WARMUP_ITERS", str(min(50, iters // 4))]


def train(args, config, name, iters, *extra):
    out = os.path.join(args.output, name)
    run([sys.executable, "train_net.py", "--config-file", config, "--num-gpus", "1",
         *data_opts(args), *schedule_opts(iters), "OUTPUT_DIR", out, *extra])
    return out


def main(argv=None):
    args = parse_args(argv)
    py = sys.executable
    run([py, "tools/make_synthetic_dataset.py", "--output", args.data, "--train", str(args.train_images),
         "--val", str(args.val_images), "--clutter", str(args.clutter_images),
         "--min-side", str(args.min_side), "--max-side", str(args.max_side)])

    sniper_cfg = "configs/sniper_tiny_cpu.yaml"
    sniper_out = train(args, sniper_cfg, "sniper", args.iters)
    baseline_out = train(args, "configs/faster_rcnn_tiny_cpu.yaml", "baseline", args.iters)
    weak_weights = os.path.join(sniper_out, "model_final.pth")
    proposals = os.path.join(args.output, "proposals.npz")
    run([py, "tools/dump_proposals.py", "--config-file", sniper_cfg, "--output", proposals,
         *data_opts(args), "OUTPUT_DIR", sniper_out, "MODEL.WEIGHTS", weak_weights])
    pos_out = train(args, sniper_cfg, "sniper_pos_more", args.neg_iters, "MODEL.WEIGHTS", weak_weights)
    neg_out = train(args, sniper_cfg, "sniper_neg", args.neg_iters, "MODEL.WEIGHTS", weak_weights,
                    "SNIPER.NEG.PROPOSALS_FILE", proposals)

    total = args.iters + args.neg_iters
    models = {f"single-scale baseline ({args.iters})": baseline_out,
              f"SNIPER ({args.iters})": sniper_out,
              f"SNIPER, positive chips ({total})": pos_out,
              f"SNIPER, + negative chips ({total})": neg_out}
    tables = {name: load_eval_results(os.path.join(out, "eval_results.json"))["synthetic_val"]["bbox"]
              for name, out in models.items()}
    print("\nCOCO box AP on the synthetic validation set (training iterations in parentheses; equal training "
          "pixels per iteration):")
    print(format_side_by_side(tables))

    records, _ = load_coco_records(os.path.join(args.data, "clutter.json"))
    print(f"\nFalse positives per image on the distractor-heavy split ({len(records)} images; a false positive "
          "has IoU < 0.5 with every object), at a fixed score and at equal recall (which does not depend on "
          "how each model's scores are calibrated):")
    print(f"  {'model':<36s} {'score >= 0.5':>14s} {'recall':>7s} {'at 50% recall':>14s} {'on distractors':>15s}")
    for name, out in models.items():
        dets = load_coco_results(os.path.join(out, "inference", "synthetic_clutter", "coco_instances_results.json"))
        fixed = false_positive_stats(dets, records, score_threshold=0.5)
        matched = false_positives_at_recall(dets, records, recall=0.5)
        at_recall = f"{matched['fp_per_image']:.2f}" if matched["recall"] >= 0.5 else "never reached"
        print(f"  {name:<36s} {fixed['fp_per_image']:14.2f} {fixed['recall']:7.2f} {at_recall:>14s} "
              f"{matched['fp_on_distractors_per_image']:15.2f}")

    drawn = os.path.join(args.output, "detections")
    run([py, "tools/infer.py", "--config-file", "configs/sniper_tiny_cpu.yaml",
         "--input", os.path.join(args.data, "images", "val_*.jpg"), "--output", drawn,
         "--confidence-threshold", "0.5", "MODEL.WEIGHTS", os.path.join(neg_out, "model_final.pth")])
    print(f"\nDone. Results: {args.output}/*/eval_results.json; drawn detections: {drawn}/")


if __name__ == "__main__":
    main()
