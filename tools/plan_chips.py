#!/usr/bin/env python
"""Plan the SNIPER training chips of a COCO-style data set for E epochs, into one versioned file.

Reads the chip settings from a detectron2 yaml config (``cfg.SNIPER``), plans every image at all
scales for every epoch (worker processes, progress bar), writes the plan atomically, and prints
chips per image per scale, then the ``train_net.py`` command that trains on this plan (with
``SNIPER.PLAN.FILE`` when the file is not the one training looks for by default, and any planning
input given here that differs from the config). Training loads the file when its config and data set
hashes match, and logs which plan it loaded. ``--draw N`` also writes chip overlays of the first N
images (epoch 0) next to the output file. The planning itself is numpy; detectron2 is only used to read the config.

Example:
    python tools/plan_chips.py --config-file configs/sniper_tiny_cpu.yaml \\
        --dataset-json datasets/synthetic/train.json --output output/plans/synthetic.npz \\
        --epochs 10 --num-workers 2 --draw 4
"""

import argparse
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.cli import count_arg, parse_with_overrides, run_main, setup_cfg  # noqa: E402
from sniper_d2.coco import load_coco_records  # noqa: E402
from sniper_d2.config_types import ConfigError, is_fit  # noqa: E402
from sniper_d2.plans import PlanParams, load_or_build_plan  # noqa: E402

logger = logging.getLogger("plan_chips")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="detectron2 yaml config with a SNIPER section")
    p.add_argument("--dataset-json", required=True, help="COCO-style instances json")
    p.add_argument("--image-root", help="folder of the images (default: next to the json); only for --draw")
    p.add_argument("--output", help="plan file to write (.npz) (default: the file training looks for, "
                                    "SNIPER.PLAN.FILE or <OUTPUT_DIR>/chip_plan_<DATASETS.TRAIN>.npz)")
    p.add_argument("--epochs", type=count_arg(1), help="epochs to plan (default: SNIPER.PLAN.EPOCHS)")
    p.add_argument("--seed", type=int, help="base seed (default: SNIPER.PLAN.SEED)")
    p.add_argument("--num-workers", type=count_arg(0), help="planning processes (default: SNIPER.PLAN.NUM_WORKERS)")
    p.add_argument("--proposals", help="proposals file for negative chips (default: SNIPER.NEG.PROPOSALS_FILE)")
    p.add_argument("--draw", type=count_arg(0), default=0, metavar="N",
                   help="write chip overlays (epoch 0) of the first N images to <output dir>/plan_overlays/")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parse_with_overrides(p, argv)


# Per scale index: BGR colours of the chip outlines (cycled).
_COLORS = [(0, 0, 255), (0, 200, 0), (255, 128, 0), (0, 200, 255), (255, 0, 255), (255, 255, 0)]


def draw_overlays(plan, records, params, count, folder):
    """Write ``<folder>/<image_id>.png``: the image (gray if unreadable), boxes, epoch-0 chips.

    Positive chips are solid, one colour per scale; negative chips are thin; boxes are white.
    """
    import cv2

    os.makedirs(folder, exist_ok=True)
    for i, rec in enumerate(records[:count]):
        image = cv2.imread(rec["file_name"], cv2.IMREAD_COLOR)
        if image is None:
            logger.warning(f"{rec['file_name']}: cannot read the image; drawing on a gray canvas")
            image = np.full((rec["height"], rec["width"], 3), 128, np.uint8)
        for box in np.asarray(rec["boxes"]).reshape(-1, 4).astype(int):
            cv2.rectangle(image, tuple(box[:2]), tuple(box[2:]), (255, 255, 255), 1)
        rows = np.flatnonzero((plan.image_index == i) & (plan.epoch == 0))
        for j in rows:
            x0, y0, x1, y1 = np.round(plan.chips[j]).astype(int)
            color = _COLORS[int(plan.scale_index[j]) % len(_COLORS)]
            cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), color, 1 if plan.is_negative[j] else 3)
        legend = ", ".join(f"#{k}={'fit' if is_fit(s) else s}" for k, s in enumerate(params.scales))
        cv2.putText(image, f"{len(rows)} chips (epoch 0); scales {legend}", (10, 30),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 3)
        cv2.putText(image, f"{len(rows)} chips (epoch 0); scales {legend}", (10, 30),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 1)
        path = os.path.join(folder, f"{rec['image_id']}.png")
        if not cv2.imwrite(path, image):
            raise OSError(f"{path}: cannot write the overlay")
    logger.info(f"wrote {min(count, len(records))} chip overlays to {folder}")


def handoff_command(args, cfg, output, epochs, seed, proposals_file):
    """The train_net.py command that trains on this plan (and the overrides it needs), as text.

    Training uses a plan file when its config hash (scales, ranges, chip size, stride, epochs, seed,
    proposals) and data set hash match; so the command repeats every planning input that differs
    from the config, plus ``SNIPER.PLAN.FILE`` when the file is not where training looks by default.
    """
    import shlex

    from sniper_d2.data.build import default_plan_path

    extra = list(args.opts or [])
    if os.path.abspath(output) != os.path.abspath(default_plan_path(cfg)) or cfg.SNIPER.PLAN.FILE:
        extra += ["SNIPER.PLAN.FILE", output]
    if epochs != cfg.SNIPER.PLAN.EPOCHS:
        extra += ["SNIPER.PLAN.EPOCHS", str(epochs)]
    if seed != cfg.SNIPER.PLAN.SEED:
        extra += ["SNIPER.PLAN.SEED", str(seed)]
    if proposals_file and proposals_file != cfg.SNIPER.NEG.PROPOSALS_FILE:
        extra += ["SNIPER.NEG.PROPOSALS_FILE", proposals_file]
    command = " ".join(shlex.quote(x) for x in ["python", "train_net.py", "--config-file", args.config_file, *extra])
    note = ("" if list(cfg.DATASETS.TRAIN) else
            "  (DATASETS.TRAIN is empty: register the json with SNIPER.REGISTER_COCO and name it there)\n")
    return (f"train on this plan (DATASETS.TRAIN {list(cfg.DATASETS.TRAIN)} must hold the images of "
            f"{args.dataset_json}):\n{note}  {command}")


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = setup_cfg(args.config_file, args.opts, purpose="read")
    params = PlanParams.from_cfg(cfg)
    epochs = args.epochs if args.epochs is not None else cfg.SNIPER.PLAN.EPOCHS
    seed = args.seed if args.seed is not None else cfg.SNIPER.PLAN.SEED
    workers = args.num_workers if args.num_workers is not None else cfg.SNIPER.PLAN.NUM_WORKERS
    if epochs < 1:
        raise ConfigError(f"SNIPER.PLAN.EPOCHS must be at least 1, got {epochs}")
    records, _ = load_coco_records(args.dataset_json, args.image_root)

    proposals = None
    proposals_file = args.proposals or cfg.SNIPER.NEG.PROPOSALS_FILE
    if proposals_file:
        from sniper_d2.proposals import load_proposals_for_records

        proposals = load_proposals_for_records(proposals_file, records, cfg.SNIPER.SCALES)

    from sniper_d2.data.build import default_plan_path

    output = args.output or default_plan_path(cfg)
    plan = load_or_build_plan(output, records, params, epochs, seed, num_workers=workers, proposals=proposals)
    print(f"{output}: {plan.summary(len(records), params.scales)}")
    print(handoff_command(args, cfg, output, epochs, seed, proposals_file))
    empty = sum(1 for r in records if len(r["boxes"]) == 0)
    print(f"images without annotations: {empty} (no positive chips{'' if proposals else ', no proposals'})")
    if args.draw > 0:
        draw_overlays(plan, records, params, args.draw,
                      os.path.join(os.path.dirname(os.path.abspath(output)), "plan_overlays"))


if __name__ == "__main__":
    run_main(main, "plan_chips.py")
