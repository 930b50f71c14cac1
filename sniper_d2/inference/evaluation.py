"""Evaluation of SNIPER models: full images, multi-scale tiled inference, COCO AP.

One path: :func:`tiled_inference_on_dataset` sends a data set's images through the prefetching tile
pipeline (:mod:`sniper_d2.inference.pipeline`: images read by windows, tiles cut in data-loader
workers, batches across images), the same one ``tools/infer.py`` runs folders with, and hands each
stitched full-image result to a detectron2 ``DatasetEvaluator``.
:func:`run_sniper_inference_on_dataset` builds that from a config (predictor from ``SNIPER.TEST``,
:class:`SniperCOCOEvaluator` unless the caller gives an evaluator); ``train_net.py`` uses it for
every evaluation.

:class:`SniperCOCOEvaluator` is detectron2's ``COCOEvaluator`` with ``TEST.DETECTIONS_PER_IMAGE``
per image (not 100), the Python COCOeval when the compiled one is missing, and huge images
(``SNIPER.TEST.EVAL_WINDOWS_MIN_PIXELS`` / ``_MIN_OBJECTS``) evaluated by windows
(:mod:`sniper_d2.evaluation_windows`). It gathers predictions from all processes to the main one,
so N processes give the same numbers as one.
"""

import itertools
import json
import logging
import os

import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ..image_io import ImageReadError
from .predictor import MultiScaleTiledPredictor, TiledInferenceParams

__all__ = ["has_fast_coco_eval", "SniperCOCOEvaluator", "build_sniper_evaluator", "tiled_inference_on_dataset",
           "run_sniper_inference_on_dataset"]

logger = logging.getLogger(__name__)


def has_fast_coco_eval():
    """True when detectron2's compiled ``COCOevalAccumulate`` is available."""
    try:
        from detectron2 import _C

        return hasattr(_C, "COCOevalAccumulate")
    except ImportError:  # the Python-only install's stand-in raises ImportError on any op
        return False


class SniperCOCOEvaluator(COCOEvaluator):
    """detectron2's COCOEvaluator (bbox) for stitched full-image detections.

    Differences from the stock one: keeps ``max_dets_per_image`` detections per image (dense scenes
    need more than COCO's 100), picks the Python COCOeval when detectron2 has no compiled one, and
    refuses outputs whose ``Instances.image_size`` is not the input's original ``(height, width)``
    (e.g. tile-pixel outputs of an unwrapped model), which would be scored in the wrong frame.
    Predictions are gathered from all processes to the main one (``comm.gather``).

    Huge images: with ``window_size_px`` > 0, the images with at least ``windows_min_pixels`` pixels
    or ``windows_min_objects`` annotations are evaluated by evaluation windows of that size
    (:mod:`sniper_d2.evaluation_windows`: objects and detections assigned to windows by box centre,
    matched within a window; ``max_dets_per_image`` then caps each window), in the same COCO
    evaluation as the other images. Plain COCO matching of such an image would build one IoU
    matrix of all its detections by all its objects.
    """

    def __init__(self, dataset_name, output_dir=None, *, max_dets_per_image=500, distributed=True,
                 window_size_px=0, windows_min_pixels=0, windows_min_objects=0):
        super().__init__(dataset_name, tasks=("bbox",), distributed=distributed, output_dir=output_dir,
                         max_dets_per_image=max_dets_per_image, use_fast_impl=has_fast_coco_eval())
        self.dataset_name = dataset_name
        self.max_dets = (1, 10, max_dets_per_image)
        self.window_size_px = window_size_px
        self.windows_min_pixels, self.windows_min_objects = windows_min_pixels, windows_min_objects
        self.output_dir = output_dir

    def process(self, inputs, outputs):
        for item, out in zip(inputs, outputs):
            if "instances" in out and tuple(out["instances"].image_size) != (item["height"], item["width"]):
                raise ValueError(f"{item.get('file_name', item['image_id'])}: detections are for a "
                                 f"{tuple(out['instances'].image_size)} image, but the original is "
                                 f"{(item['height'], item['width'])}: evaluate through tiled_inference_on_dataset")
        super().process(inputs, outputs)

    def _eval_predictions(self, predictions, img_ids=None):
        """COCOEvaluator's, with huge images by windows. Overriding this method is detectron2's own way
        of changing how predictions are scored (its RotatedCOCOEvaluator does the same)."""
        gt = self._coco_api.dataset
        huge = []
        if self.window_size_px > 0:
            from ..evaluation_windows import images_to_window

            huge = images_to_window(gt, min_pixels=self.windows_min_pixels, min_objects=self.windows_min_objects)
        if not huge:
            return super()._eval_predictions(predictions, img_ids=img_ids)
        from ..evaluation_windows import cut_fraction, evaluate_coco
        from ..io import atomic_open

        metadata = MetadataCatalog.get(self.dataset_name)
        to_dataset_id = {v: k for k, v in getattr(metadata, "thing_dataset_id_to_contiguous_id", {}).items()}
        results = [dict(r, category_id=to_dataset_id.get(r["category_id"], r["category_id"]))
                   for r in itertools.chain.from_iterable(p["instances"] for p in predictions)]
        if self.output_dir:
            with atomic_open(os.path.join(self.output_dir, "coco_instances_results.json"), "w") as f:
                json.dump(results, f)
        if img_ids is not None:
            keep = set(img_ids)
            gt = dict(gt, images=[im for im in gt["images"] if im["id"] in keep],
                      annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
            results = [r for r in results if r["image_id"] in keep]
            huge = [i for i in huge if i in keep]
        cut = cut_fraction([a["bbox"] for a in gt["annotations"] if a["image_id"] in set(huge)], self.window_size_px)
        logger.info(f"{len(huge)} huge images evaluated by {self.window_size_px} px windows "
                    f"({cut:.1%} of their objects are crossed by a window border)")
        coco_eval = evaluate_coco(gt, results, window_size_px=self.window_size_px, windowed_image_ids=huge,
                                  max_dets=self.max_dets) if results else None
        self._results["bbox"] = self._derive_coco_results(coco_eval, "bbox",
                                                          class_names=metadata.get("thing_classes"))


def build_sniper_evaluator(cfg, dataset_name, output_dir=None):
    """:class:`SniperCOCOEvaluator` keeping ``cfg.TEST.DETECTIONS_PER_IMAGE`` detections per image,
    huge images by ``cfg.SNIPER.TEST.EVAL_WINDOW_SIZE`` windows."""
    test = cfg.SNIPER.TEST
    return SniperCOCOEvaluator(dataset_name, output_dir, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                               window_size_px=test.EVAL_WINDOW_SIZE, windows_min_pixels=test.EVAL_WINDOWS_MIN_PIXELS,
                               windows_min_objects=test.EVAL_WINDOWS_MIN_OBJECTS)


def tiled_inference_on_dataset(predictor, dataset_name, evaluator, image_format="BGR", num_workers=0):
    """Multi-scale tiled inference over a registered data set, each image's result to ``evaluator``.

    All processes call it; each runs the images ``rank::world`` and the evaluator gathers (detectron2's
    ``DatasetEvaluator`` contract: ``reset``, ``process(inputs, outputs)``, ``evaluate``).

    Args:
        predictor (MultiScaleTiledPredictor): the model and ``SNIPER.TEST`` settings; its model is
            not (Distributed)DataParallel-wrapped: each process runs its own images.
        dataset_name (str): a registered data set (dicts with ``file_name``, ``image_id`` and
            ``height``/``width`` in original pixels, which each image's size must equal).
        evaluator (DatasetEvaluator): gets ``process([dataset dict], [{"instances": Instances}])``
            per image, boxes XYXY in original pixels.
        image_format (str): ``INPUT.FORMAT``.
        num_workers (int): data-loader workers cutting tiles (0: in this process).

    Returns:
        what ``evaluator.evaluate()`` returns on the main process (``{}`` where it returns None).

    Raises:
        ImageReadError: an image is unreadable, or its size is not the data set's.
    """
    import time

    from detectron2.evaluation.evaluator import inference_context
    from detectron2.utils import comm

    from .pipeline import ImageTask, build_tile_loader, run_tiled_inference

    model = predictor.model
    evaluator.reset()
    dicts = DatasetCatalog.get(dataset_name)
    mine = list(enumerate(dicts))[comm.get_rank()::comm.get_world_size()]
    tasks = [ImageTask(i, d["file_name"], expected_size=(d["height"], d["width"]) if "height" in d else None)
             for i, d in mine]
    loader = build_tile_loader(tasks, predictor, image_format, num_workers=num_workers)
    start = time.perf_counter()
    with inference_context(model), torch.no_grad():
        for index, det, size, error in run_tiled_inference(predictor, loader):
            if error:
                raise ImageReadError(dicts[index]["file_name"], error)
            inst = Instances(size)
            inst.pred_boxes, inst.scores, inst.pred_classes = Boxes(det["boxes"]), det["scores"], det["classes"]
            evaluator.process([dicts[index]], [{"instances": inst}])
    seconds = time.perf_counter() - start
    logger.info(f"tiled inference on {dataset_name}: {len(tasks)} images in {seconds:.1f} s "
                f"({len(tasks) / max(seconds, 1e-9):.2f} images/s) in this process")
    results = evaluator.evaluate()
    return results if results is not None else {}


def run_sniper_inference_on_dataset(cfg, model, dataset_name, output_dir=None, evaluator=None):
    """Evaluate ``model`` on ``dataset_name`` with the config's tiled inference (all processes call it).

    :func:`tiled_inference_on_dataset` with a predictor from ``cfg.SNIPER.TEST``, the tile workers of
    ``SNIPER.TEST.NUM_WORKERS`` and, unless ``evaluator`` is given, :class:`SniperCOCOEvaluator`.

    Args:
        cfg: config with the SNIPER section (``cfg.SNIPER.TEST``, ``INPUT.FORMAT``, ``DATALOADER``).
        model: the detector (training mode is restored afterwards), optionally DDP-wrapped.
        dataset_name (str): a registered data set with COCO json metadata.
        output_dir (str or None): where COCOEvaluator writes ``coco_instances_results.json``.
        evaluator (DatasetEvaluator or None): another evaluator (e.g. ``Trainer.build_evaluator``'s).

    Returns:
        OrderedDict ``{"bbox": {"AP": ..., "AP50": ..., ...}}`` on the main process, ``{}`` elsewhere.
    """
    from .pipeline import tile_loader_workers

    if isinstance(model, (DistributedDataParallel, DataParallel)):
        model = model.module
    predictor = MultiScaleTiledPredictor(model, TiledInferenceParams.from_cfg(cfg))
    evaluator = evaluator if evaluator is not None else build_sniper_evaluator(cfg, dataset_name, output_dir)
    return tiled_inference_on_dataset(predictor, dataset_name, evaluator, cfg.INPUT.FORMAT,
                                      num_workers=tile_loader_workers(cfg))
