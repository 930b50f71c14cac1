#!/usr/bin/env python
"""Convert a VisDrone-DET split (images/ + annotations/*.txt) to COCO json.

Ignored regions (category 0) and "others" (category 11) become ignore regions (iscrowd=1); see
sniper_d2/converters/visdrone.py for every mapping choice. The json is written atomically.

Example:
    python tools/convert_visdrone.py --root datasets/visdrone/VisDrone2019-DET-train \
        --output datasets/visdrone/train.json
"""

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sniper_d2.cli import run_main  # noqa: E402
from sniper_d2.converters.visdrone import VisDroneFormatError, convert_split  # noqa: E402
from sniper_d2.io import atomic_open  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="split folder holding images/ and annotations/")
    p.add_argument("--output", required=True, help="COCO json to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s]: %(message)s", datefmt="%m/%d %H:%M:%S")
    try:
        coco = convert_split(args.root)
    except VisDroneFormatError as e:
        sys.exit(f"convert_visdrone.py: error: {e}")
    with atomic_open(args.output, "w") as f:
        json.dump(coco, f)
    ignored = sum(a["iscrowd"] for a in coco["annotations"])
    print(f"{args.output}: {len(coco['images'])} images, {len(coco['annotations']) - ignored} objects, "
          f"{ignored} ignore regions")


if __name__ == "__main__":
    run_main(main, "convert_visdrone.py")
