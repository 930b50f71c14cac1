#!/usr/bin/env python
"""Dump RPN proposals of a (short-trained) model over the training set, for negative chips.

Runs at every SNIPER training scale, tiled like inference (the backbone in SNIPER.TEST.PRECISION),
keeps SNIPER.NEG.TOPK_PER_SCALE proposals per image and scale after NMS, and writes one versioned
file. Interrupted? Run the same command again: finished images are not redone. Then train with
SNIPER.NEG.PROPOSALS_FILE pointing at it.

Examples:
    python tools/dump_proposals.py --config-file configs/sniper_tiny_cpu.yaml \
        --output output/proposals.npz MODEL.WEIGHTS output/short/model_final.pth
    python tools/dump_proposals.py --config-file configs/sniper_r50_fpn.yaml --num-gpus 4 \
        --output output/coco_proposals.npz MODEL.WEIGHTS output/short/model_final.pth
"""

import os
import sys

from detectron2.engine import default_argument_parser

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.cli import run_cli, setup_cfg  # noqa: E402
from sniper_d2.data.build import training_records  # noqa: E402
from sniper_d2.inference.fast_model import build_inference_model  # noqa: E402
from sniper_d2.inference.proposal_dump import dump_proposals  # noqa: E402


def main(args):
    cfg = setup_cfg(args.config_file, args.opts, args, purpose="infer")
    if not cfg.MODEL.WEIGHTS:
        raise FileNotFoundError("MODEL.WEIGHTS is empty: give the weak detector's weights: MODEL.WEIGHTS path/to/model_final.pth")
    # as tools/infer.py: batch norms folded, channels-last on CPU, backbone in SNIPER.TEST.PRECISION
    model = build_inference_model(cfg)
    records, _ = training_records(cfg)
    dump_proposals(cfg, model, records, args.output)


if __name__ == "__main__":
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument("--output", required=True, help="proposals file to write (.npz)")
    run_cli(main, parser.parse_args(), "dump_proposals.py")
