#!/usr/bin/env python
"""The end-to-end CPU demo on the synthetic data set (what ``bash scripts/demo.sh`` runs).

Steps, each a command a user could run by hand (printed before it runs):
  1. generate the synthetic data set (tools/make_synthetic_dataset.py);
  2. train SNIPER on positive chips only (configs/sniper_tiny_cpu.yaml) and evaluate it with
     multi-scale tiled inference; this short-trained model is also the weak detector of step 3;
  3. dump its RPN proposals over the training set (tools/dump_proposals.py);
  4. train SNIPER again with negative chips mined from those proposals, and evaluate it;
  5. train the equal-pixel single-scale baseline (configs/faster_rcnn_tiny_cpu.yaml), evaluate it;
  6. print the COCO AP tables side by side, and false positives per image on a distractor-heavy
     split (20-40 look-alike non-objects per image), with and without negative chips;
  7. draw the final model's detections on the validation images (tools/infer.py).
Everything lands under ``--output`` (default ``output/demo``).

Example:
    python tools/demo.py --iters 300
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from sniper_d2.analysis import false_positive_stats, load_coco_results  # noqa: E402
from sniper_d2.coco import load_coco_records  # noqa: E402
from sniper_d2.results import format_side_by_side, load_eval_results  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="output/demo", help="output folder (default: %(default)s)")
    p.add_argument("--data", default="datasets/synthetic", help="synthetic data folder (default: %(default)s)")
    p.add_argument("--iters", type=int, default=300, help="training iterations per model (default: %(default)s)")
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


def common_opts(args):
    """Config overrides that point a config at the demo's data and schedule."""
    train, val, clutter = (os.path.join(args.data, f"{split}.json") for split in ("train", "val", "clutter"))
    # LR drops at 80% and 93% of the schedule (distinct, inside it, even for tiny --iters).
    steps = tuple(sorted({int(args.iters * 0.8), int(args.iters * 0.93)} - {0}))
    return ["SNIPER.REGISTER_COCO", f'(("synthetic_train", "{train}", ""), ("synthetic_val", "{val}", ""), '
                                    f'("synthetic_clutter", "{clutter}", ""))',
            "DATASETS.TEST", '("synthetic_val", "synthetic_clutter")',
            "SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", str(steps),
            "SOLVER.CHECKPOINT_PERIOD", str(args.iters), "SOLVER.WARMUP_ITERS", str(min(50, args.iters // 4))]


def train(args, config, name, *extra):
    out = os.path.join(args.output, name)
    run([sys.executable, "train_net.py", "--config-file", config, "--num-gpus", "1",
         *common_opts(args), "OUTPUT_DIR", out, *extra])
    return out


def main(argv=None):
    args = parse_args(argv)
    py = sys.executable
    run([py, "tools/make_synthetic_dataset.py", "--output", args.data, "--train", str(args.train_images),
         "--val", str(args.val_images), "--clutter", str(args.clutter_images),
         "--min-side", str(args.min_side), "--max-side", str(args.max_side)])

    sniper_out = train(args, "configs/sniper_tiny_cpu.yaml", "sniper")
    proposals = os.path.join(args.output, "proposals.npz")
    run([py, "tools/dump_proposals.py", "--config-file", "configs/sniper_tiny_cpu.yaml", "--output", proposals,
         *common_opts(args), "OUTPUT_DIR", sniper_out, "MODEL.WEIGHTS", os.path.join(sniper_out, "model_final.pth")])
    neg_out = train(args, "configs/sniper_tiny_cpu.yaml", "sniper_neg", "SNIPER.NEG.PROPOSALS_FILE", proposals)
    baseline_out = train(args, "configs/faster_rcnn_tiny_cpu.yaml", "baseline")

    models = {"single-scale baseline": baseline_out, "SNIPER, positive chips": sniper_out,
              "SNIPER, + negative chips": neg_out}
    tables = {name: load_eval_results(os.path.join(out, "eval_results.json"))["synthetic_val"]["bbox"]
              for name, out in models.items()}
    print("\nCOCO box AP on the synthetic validation set (equal training pixels per iteration):")
    print(format_side_by_side(tables))

    records, _ = load_coco_records(os.path.join(args.data, "clutter.json"))
    print(f"\nFalse positives per image on the distractor-heavy split ({len(records)} images; score >= 0.5, "
          "IoU < 0.5 with every object):")
    for name, out in models.items():
        dets = load_coco_results(os.path.join(out, "inference", "synthetic_clutter", "coco_instances_results.json"))
        fp = false_positive_stats(dets, records)
        print(f"  {name:<28s} {fp['fp_per_image']:6.2f} per image, {fp['fp_on_distractors_per_image']:6.2f} on distractors")

    drawn = os.path.join(args.output, "detections")
    run([py, "tools/infer.py", "--config-file", "configs/sniper_tiny_cpu.yaml",
         "--input", os.path.join(args.data, "images", "val_*.jpg"), "--output", drawn,
         "--confidence-threshold", "0.5", "MODEL.WEIGHTS", os.path.join(neg_out, "model_final.pth")])
    print(f"\nDone. Results: {args.output}/*/eval_results.json; drawn detections: {drawn}/")


if __name__ == "__main__":
    main()
