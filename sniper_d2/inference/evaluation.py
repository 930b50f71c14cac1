"""Evaluation of SNIPER models: full images, multi-scale tiled inference, COCO AP.

Three pieces for detectron2's ``inference_on_dataset(model, loader, evaluator)``:

- :func:`build_sniper_test_loader`: full images at their original size (no ``ResizeShortestEdge``),
  sharded across processes by detectron2's ``InferenceSampler``;
- :func:`sniper_inference_model`: wraps the detector in :class:`SniperTiledInference`, whose
  forward runs :class:`~sniper_d2.inference.MultiScaleTiledPredictor` on each full image and returns
  stitched ``Instances`` in original pixels, the same outputs as a stock detector's;
- :func:`build_sniper_evaluator`: :class:`SniperCOCOEvaluator`, detectron2's ``COCOEvaluator`` with
  ``TEST.DETECTIONS_PER_IMAGE`` per image (not 100) and the Python COCOeval when the compiled one is
  missing. It gathers predictions from all processes to the main one, so N processes give the same
  numbers as one.

:func:`run_sniper_inference_on_dataset` evaluates one data set the way ``tools/infer.py`` runs
folders: through the prefetching tile pipeline (:mod:`sniper_d2.inference.pipeline`: tiles cut in
data-loader workers, images read by windows, batches across images), straight into
:class:`SniperCOCOEvaluator`; ``train_net.py`` uses it. The three pieces above remain for
detectron2's own ``inference_on_dataset``.
"""

import logging

import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ..image_io import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, check_image_size, open_image, read_image_size
from .predictor import MultiScaleTiledPredictor, TiledInferenceParams

__all__ = ["has_fast_coco_eval", "FullImageMapper", "SniperTiledInference", "sniper_inference_model",
           "build_sniper_test_loader", "SniperCOCOEvaluator", "build_sniper_evaluator",
           "run_sniper_inference_on_dataset"]

logger = logging.getLogger(__name__)


def has_fast_coco_eval():
    """True when detectron2's compiled ``COCOevalAccumulate`` is available."""
    try:
        from detectron2 import _C

        return hasattr(_C, "COCOevalAccumulate")
    except ImportError:  # the Python-only install's stand-in raises ImportError on any op
        return False


class FullImageMapper:
    """Test-time mapper: a data set dict -> the same dict, checked, for :class:`SniperTiledInference`.

    Output keys: ``file_name``, ``image_id``, ``height``, ``width`` (copied) and ``image_format``.
    No pixel is decoded here: :class:`SniperTiledInference` opens the image with the windowed reader
    and reads only what its tiles need. The image's size (from its header) must equal the dict's
    ``height``/``width``, which the ground truth is measured in; otherwise :class:`ImageReadError`
    names the file (:func:`~sniper_d2.image_io.check_image_size`).
    """

    def __init__(self, image_format="BGR", max_image_pixels=DEFAULT_MAX_IMAGE_PIXELS):
        self.image_format = image_format
        self.max_image_pixels = max_image_pixels

    def __call__(self, dataset_dict):
        out = {k: dataset_dict[k] for k in ("file_name", "image_id", "height", "width") if k in dataset_dict}
        size = read_image_size(dataset_dict["file_name"], self.max_image_pixels)
        check_image_size(dataset_dict["file_name"], size, (dataset_dict.get("height"), dataset_dict.get("width")))
        out.setdefault("height", size[0])
        out.setdefault("width", size[1])
        out["image_format"] = self.image_format
        return out


class SniperTiledInference(torch.nn.Module):
    """A detector wrapped for full-image, multi-scale tiled inference.

    Args:
        model (nn.Module): the detector (GeneralizedRCNN or any callable of the same contract, see
            :class:`~sniper_d2.inference.MultiScaleTiledPredictor`). A (Distributed)DataParallel
            wrapper is taken off: each process runs its own images, with no collective call per tile.
        params (TiledInferenceParams).

    ``forward(inputs)``: ``inputs`` from :class:`FullImageMapper` (``file_name``, read here by windows)
    or any dicts with ``"image"`` as an (H, W, 3) uint8 array or a (3, H, W) uint8 tensor, original
    size; returns one
    ``{"instances": Instances(pred_boxes, scores, pred_classes)}`` per input, image size (H, W),
    boxes XYXY in original pixels. Eval mode only (``inference_on_dataset`` sets it).
    """

    def __init__(self, model, params):
        super().__init__()
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        self.model = model
        self.predictor = MultiScaleTiledPredictor(model, params)

    def forward(self, inputs):
        if self.training:
            raise RuntimeError("SniperTiledInference runs inference only: call .eval() first")
        outputs = []
        for item in inputs:
            if "image" not in item:  # FullImageMapper: read by windows
                det, size = self._from_file(item)
            else:
                image = item["image"]
                if torch.is_tensor(image):  # (3, H, W) tensor from another mapper
                    image = image.permute(1, 2, 0).cpu().numpy()
                det, size = self.predictor(image), image.shape[:2]
            inst = Instances(size)
            inst.pred_boxes = Boxes(det["boxes"])
            inst.scores = det["scores"]
            inst.pred_classes = det["classes"]
            outputs.append({"instances": inst})
        return outputs


    def _from_file(self, item):
        from .pipeline import finest_reduction

        params = self.predictor.params
        with open_image(item["file_name"], item.get("image_format", "BGR"),
                        max_reduction=lambda size: finest_reduction(params, size),
                        max_image_pixels=params.max_image_pixels) as reader:
            return self.predictor(reader), reader.image_size


def sniper_inference_model(cfg, model):
    """Wrap ``model`` with ``cfg.SNIPER.TEST`` settings (see :class:`SniperTiledInference`)."""
    return SniperTiledInference(model, TiledInferenceParams.from_cfg(cfg))


def build_sniper_test_loader(cfg, dataset_name):
    """Test loader of full, unresized images of ``dataset_name``: batches of one
    :class:`FullImageMapper` dict, split over processes by detectron2's ``InferenceSampler``."""
    mapper = FullImageMapper(cfg.INPUT.FORMAT, int(cfg.SNIPER.INPUT.MAX_IMAGE_PIXELS))
    return build_detection_test_loader(DatasetCatalog.get(dataset_name), mapper=mapper,
                                       num_workers=cfg.DATALOADER.NUM_WORKERS)


class SniperCOCOEvaluator(COCOEvaluator):
    """detectron2's COCOEvaluator (bbox) for stitched full-image detections.

    Differences from the stock one: keeps ``max_dets_per_image`` detections per image (dense scenes
    need more than COCO's 100), picks the Python COCOeval when detectron2 has no compiled one, and
    refuses outputs whose ``Instances.image_size`` is not the input's original ``(height, width)``
    (e.g. tile-pixel outputs of an unwrapped model), which would be scored in the wrong frame.
    Predictions are gathered from all processes to the main one (``comm.gather``).
    """

    def __init__(self, dataset_name, output_dir=None, *, max_dets_per_image=500, distributed=True):
        super().__init__(dataset_name, tasks=("bbox",), distributed=distributed, output_dir=output_dir,
                         max_dets_per_image=max_dets_per_image, use_fast_impl=has_fast_coco_eval())

    def process(self, inputs, outputs):
        for item, out in zip(inputs, outputs):
            if "instances" in out and tuple(out["instances"].image_size) != (item["height"], item["width"]):
                raise ValueError(f"{item.get('file_name', item['image_id'])}: detections are for a "
                                 f"{tuple(out['instances'].image_size)} image, but the original is "
                                 f"{(item['height'], item['width'])}: wrap the model with sniper_inference_model")
        super().process(inputs, outputs)


def build_sniper_evaluator(cfg, dataset_name, output_dir=None):
    """:class:`SniperCOCOEvaluator` keeping ``cfg.TEST.DETECTIONS_PER_IMAGE`` detections per image."""
    return SniperCOCOEvaluator(dataset_name, output_dir, max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)


def run_sniper_inference_on_dataset(cfg, model, dataset_name, output_dir=None):
    """Evaluate ``model`` on ``dataset_name`` with multi-scale tiled inference (all processes call it).

    The images are split over processes (``rank::world``) and go through the prefetching tile
    pipeline (:mod:`sniper_d2.inference.pipeline`, ``SNIPER.TEST.NUM_WORKERS`` workers, batches of
    ``SNIPER.TEST.TILE_BATCH_SIZE`` tiles across images), the same one ``tools/infer.py`` uses; each
    finished image goes to :class:`SniperCOCOEvaluator`, which gathers all processes' predictions.

    Args:
        cfg: config with the SNIPER section (``cfg.SNIPER.TEST``, ``INPUT.FORMAT``, ``DATALOADER``).
        model: the detector (training mode is restored afterwards), optionally DDP-wrapped.
        dataset_name (str): a registered data set with COCO json metadata.
        output_dir (str or None): where COCOEvaluator writes ``coco_instances_results.json``.

    Returns:
        OrderedDict ``{"bbox": {"AP": ..., "AP50": ..., ...}}`` on the main process, ``{}`` elsewhere.

    Raises:
        ImageReadError: an image is unreadable, or its size is not the data set's.
    """
    import time

    from detectron2.evaluation.evaluator import inference_context
    from detectron2.utils import comm

    from .pipeline import ImageTask, build_tile_loader, run_tiled_inference, tile_loader_workers

    if isinstance(model, (DistributedDataParallel, DataParallel)):
        model = model.module
    evaluator = build_sniper_evaluator(cfg, dataset_name, output_dir)
    evaluator.reset()
    dicts = DatasetCatalog.get(dataset_name)
    mine = list(enumerate(dicts))[comm.get_rank()::comm.get_world_size()]
    tasks = [ImageTask(i, d["file_name"], expected_size=(d["height"], d["width"]) if "height" in d else None)
             for i, d in mine]
    predictor = MultiScaleTiledPredictor(model, TiledInferenceParams.from_cfg(cfg))
    loader = build_tile_loader(tasks, predictor, cfg.INPUT.FORMAT, num_workers=tile_loader_workers(cfg))
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
