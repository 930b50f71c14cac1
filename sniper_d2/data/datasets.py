"""Registering COCO-style json files as detectron2 data sets, with our validation.

We read the json with :func:`sniper_d2.coco.load_coco_records` (boxes checked, clipped and counted)
instead of detectron2's ``load_coco_json``, so bad annotations are reported per file and image
dicts keep the fields the chip planner needs.
"""

import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..coco import DatasetError, load_coco_records
from ..config_types import ConfigError

__all__ = ["register_coco_json", "register_datasets_from_cfg", "records_to_dataset_dicts",
           "load_records_for_dataset"]

logger = logging.getLogger(__name__)


def records_to_dataset_dicts(records, dataset_id_to_contiguous_id):
    """Numpy records -> detectron2 dataset dicts (annotations in XYXY_ABS, contiguous ids)."""
    dicts = []
    for rec in records:
        annotations = [
            {"bbox": box.tolist(), "bbox_mode": BoxMode.XYXY_ABS,
             "category_id": dataset_id_to_contiguous_id[int(cat)], "iscrowd": int(crowd)}
            for box, cat, crowd in zip(rec["boxes"], rec["category_ids"], rec["iscrowd"])
        ]
        dicts.append({"file_name": rec["file_name"], "image_id": rec["image_id"],
                      "height": rec["height"], "width": rec["width"], "annotations": annotations})
    return dicts


def register_coco_json(name, json_file, image_root=""):
    """Register ``name`` in detectron2's DatasetCatalog/MetadataCatalog from a COCO json.

    Args:
        name (str): data set name for DATASETS.TRAIN/TEST.
        json_file (str): COCO instances json.
        image_root (str): folder of the images; "" = the json's folder or its images/ subfolder.

    Raises:
        DatasetError: the json file or the image folder does not exist, or the json is malformed
            (checked now, not at the first training iteration).
    """
    json_file = os.path.abspath(json_file)
    if not os.path.isfile(json_file):
        raise DatasetError(f"data set '{name}': json file {json_file} not found")
    if image_root and not os.path.isdir(image_root):
        raise DatasetError(f"data set '{name}': image folder {image_root} not found")
    root = image_root or None
    records, categories = load_coco_records(json_file, root)
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    id_map = {c["id"]: i for i, c in enumerate(categories)}
    DatasetCatalog.register(name, lambda: records_to_dataset_dicts(load_coco_records(json_file, root)[0], id_map))
    resolved_root = os.path.dirname(records[0]["file_name"]) if records else os.path.dirname(json_file)
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=resolved_root,
        sniper_image_root=root,
        evaluator_type="coco",
        thing_classes=[c["name"] for c in categories],
        thing_dataset_id_to_contiguous_id=id_map,
    )
    logger.info(f"registered data set '{name}' from {json_file}: {len(records)} images, "
                f"{len(categories)} categories")


def load_records_for_dataset(name):
    """The numpy records (see :func:`sniper_d2.coco.load_coco_records`) behind a registered name."""
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "json_file"):
        raise DatasetError(f"data set '{name}' has no json_file in its metadata; register it "
                           "with SNIPER.REGISTER_COCO or sniper_d2.data.datasets.register_coco_json")
    return load_coco_records(meta.json_file, meta.get("sniper_image_root", None))[0]


def register_datasets_from_cfg(cfg):
    """Register every ``(name, json_file, image_root)`` of ``cfg.SNIPER.REGISTER_COCO``."""
    for entry in cfg.SNIPER.REGISTER_COCO:
        if len(entry) != 3:
            raise ConfigError(f"SNIPER.REGISTER_COCO entries are (name, json_file, image_root); got {entry!r}")
        register_coco_json(*entry)
