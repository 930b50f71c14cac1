"""Evaluation of SNIPER models: full images, multi-scale tiled inference, COCO AP.

detectron2's ``inference_on_dataset(model, loader, evaluator)`` drives it:
- :func:`build_sniper_test_loader`: full images at original size (no ResizeShortestEdge), sharded
  across processes by detectron2's InferenceSampler;
- :func:`sniper_inference_model`: wraps the detector so that one call on a full image runs the
  :class:`~sniper_d2.inference.MultiScaleTiledPredictor` and returns stitched ``Instances`` in
  original pixels;
- :func:`build_sniper_evaluator`: detectron2's ``COCOEvaluator`` with ``SNIPER.TEST.MAX_DETECTIONS``
  per image (not 100), gathering across processes, with the Python COCOeval when the compiled one
  is missing.
"""

import logging

import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances

from .data.image_io import read_image
from .inference import MultiScaleTiledPredictor, TiledInferenceParams

__all__ = ["has_fast_coco_eval", "FullImageMapper", "SniperTiledInference", "sniper_inference_model",
           "build_sniper_test_loader", "build_sniper_evaluator"]

logger = logging.getLogger(__name__)


def has_fast_coco_eval():
    """True when detectron2's compiled ``COCOevalAccumulate`` is available."""
    try:
        from detectron2 import _C

        return hasattr(_C, "COCOevalAccumulate")
    except ImportError:  # the Python-only install's stand-in raises ImportError on any op
        return False


class FullImageMapper:
    """Test-time mapper: the image at its original size, as an (H, W, 3) uint8 array."""

    def __init__(self, image_format="BGR"):
        self.image_format = image_format

    def __call__(self, dataset_dict):
        out = {k: dataset_dict[k] for k in ("file_name", "image_id", "height", "width")}
        out["image"] = read_image(dataset_dict["file_name"], format=self.image_format)
        return out


class SniperTiledInference(torch.nn.Module):
    """A detector wrapped for full-image, multi-scale tiled inference.

    ``forward(inputs)``: inputs from :class:`FullImageMapper`; returns one
    ``{"instances": Instances(pred_boxes, scores, pred_classes)}`` per input, in original pixels.
    """

    def __init__(self, model, params):
        super().__init__()
        self.model = model
        self.predictor = MultiScaleTiledPredictor(model, params)

    def forward(self, inputs):
        outputs = []
        for item in inputs:
            image = item["image"]
            if torch.is_tensor(image):  # (3, H, W) tensor from another mapper
                image = image.permute(1, 2, 0).numpy()
            det = self.predictor(image)
            inst = Instances(image.shape[:2])
            inst.pred_boxes = Boxes(det["boxes"])
            inst.scores = det["scores"]
            inst.pred_classes = det["classes"]
            outputs.append({"instances": inst})
        return outputs


def sniper_inference_model(cfg, model):
    """Wrap ``model`` with ``cfg.SNIPER.TEST`` settings (see :class:`SniperTiledInference`)."""
    return SniperTiledInference(model, TiledInferenceParams.from_cfg(cfg))


def build_sniper_test_loader(cfg, dataset_name):
    """Full-resolution test loader for ``dataset_name`` (one image per batch, sharded by rank)."""
    return build_detection_test_loader(DatasetCatalog.get(dataset_name), mapper=FullImageMapper(cfg.INPUT.FORMAT),
                                       num_workers=cfg.DATALOADER.NUM_WORKERS)


def build_sniper_evaluator(cfg, dataset_name, output_dir=None):
    """COCOEvaluator (bbox) keeping ``SNIPER.TEST.MAX_DETECTIONS`` detections per image."""
    return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_dir,
                         max_dets_per_image=cfg.SNIPER.TEST.MAX_DETECTIONS,
                         use_fast_impl=has_fast_coco_eval())
