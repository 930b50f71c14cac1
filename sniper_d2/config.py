"""Config keys of sniper_d2, all under ``cfg.SNIPER``: :func:`add_sniper_config`, every key commented.

Coordinate and unit conventions used by every key below:
  * a *scale* is a resize factor applied to the original image (never a pixel size);
  * sizes of objects are ``sqrt(w * h)`` of the box measured in ORIGINAL-image pixels;
  * chip sizes and strides are in pixels of the SCALED image (what the network sees).

The conventions "scale -1 = fit" and "upper bound -1 = infinity" are decoded by the value types of
:mod:`sniper_d2.config_types`; config files are read by :mod:`sniper_d2.config_files` (fvcore,
without torch); :mod:`sniper_d2.config_checks` checks a merged config before training.

:func:`add_sniper_config` imports detectron2's ``CfgNode`` lazily, so that ``import sniper_d2.config``
stays cheap.
"""

from .config_types import FIT_SCALE, NO_UPPER_BOUND

__all__ = ["MOVED_KEYS", "add_sniper_config"]

# Keys that sniper_d2 had and that duplicated one of detectron2's: old name -> the key to set instead.
# A config file or command line that still sets an old one is refused naming the new one.
MOVED_KEYS = {
    "SNIPER.TEST.MAX_DETECTIONS": "TEST.DETECTIONS_PER_IMAGE",  # per full image after merging, too
    "SNIPER.TEST.SCORE_THRESH": "MODEL.ROI_HEADS.SCORE_THRESH_TEST",  # per tile, before merging
}


def add_sniper_config(cfg):
    """Add the ``SNIPER`` section (and the few extra model keys we use) to a detectron2 config.

    Args:
        cfg (detectron2.config.CfgNode): modified in place.
    """
    from detectron2.config import CfgNode as CN

    _C = cfg
    _C.SNIPER = CN()
    # Master switch: train on chips (planned below) instead of whole images, and evaluate with
    # multi-scale tiled inference. False gives a stock single-scale detectron2 model.
    _C.SNIPER.ENABLED = True
    # Data sets to register from COCO-style json at start-up, so that DATASETS.TRAIN/TEST can name
    # them: a tuple of (name, json_file, image_root) triples. image_root "" = the json's folder
    # (or its images/ subfolder). Example: (("visdrone_train", "datasets/visdrone/train.json", ""),)
    _C.SNIPER.REGISTER_COCO = ()

    # ---------------------------------------------------------------------------------------
    # Training chips
    # ---------------------------------------------------------------------------------------
    # Pyramid scales (resize factors of the original image). FIT_SCALE (-1) = whole image fit to
    # CHIP_SIZE on its long side. Original SNIPER on COCO: (3.0, 1.667, -1).
    _C.SNIPER.SCALES = (3.0, 1.667, FIT_SCALE)
    # One (lo, hi) per scale: a box is *valid* (a positive) at that scale when lo <= sqrt(w*h) < hi,
    # measured in ORIGINAL-image pixels; elsewhere it is *ignored* (neither positive nor background).
    # hi = -1 means infinity. Ranges should overlap. Original SNIPER: (0,80), (32,150), (120,inf).
    _C.SNIPER.VALID_RANGES = ((0.0, 80.0), (32.0, 150.0), (120.0, NO_UPPER_BOUND))
    # Chip side, in pixels of the scaled image. Chips are square.
    _C.SNIPER.CHIP_SIZE = 512
    # Grid stride of candidate chip positions, in pixels of the scaled image.
    _C.SNIPER.CHIP_STRIDE = 32
    # A box cut by the chip border stays a positive only if at least this fraction of its area is
    # inside the chip; otherwise it becomes an ignore region.
    _C.SNIPER.MIN_VISIBLE_FRACTION = 0.5
    # Treat COCO ``iscrowd`` boxes as ignore regions (never positives, never background).
    _C.SNIPER.CROWD_AS_IGNORE = True

    # ---------------------------------------------------------------------------------------
    # Chip plans (precomputed chips for every image, scale and epoch)
    # ---------------------------------------------------------------------------------------
    _C.SNIPER.PLAN = CN()
    # Path of the plan file; "" = "<OUTPUT_DIR>/chip_plan_<dataset>.npz". Recomputed when its
    # config hash or data set hash does not match.
    _C.SNIPER.PLAN.FILE = ""
    # Number of epochs planned (one seed per epoch). Training past the last planned epoch cycles.
    _C.SNIPER.PLAN.EPOCHS = 10
    # Base seed of the per-epoch seeds.
    _C.SNIPER.PLAN.SEED = 0
    # Worker processes used to plan (0 = plan in the main process).
    _C.SNIPER.PLAN.NUM_WORKERS = 2
    # Which chips are trained. "sniper": positive chips covering the objects valid at each scale
    # (greedy cover, re-drawn each epoch) plus sampled negative chips. "sliced": plain slicing as
    # SAHI / PaddleDetection smalldet / DeepForest train: every CHIP_SIZE tile of a regular grid at
    # every scale (background tiles included), every tile every epoch in a new order, every object
    # valid whatever its size (VALID_RANGES and negative chips are not used), boxes cut below
    # MIN_VISIBLE_FRACTION ignored. Same mapper, loader and evaluation: only the chips differ.
    _C.SNIPER.PLAN.MODE = "sniper"
    # "sliced": overlap of neighbouring tiles, as a fraction of CHIP_SIZE, in [0, 1) (SAHI: 0.2).
    _C.SNIPER.PLAN.SLICE_OVERLAP = 0.2

    # ---------------------------------------------------------------------------------------
    # Negative chips (mined from a weak detector's proposals, see tools/dump_proposals.py)
    # ---------------------------------------------------------------------------------------
    _C.SNIPER.NEG = CN()
    # Proposals file written by tools/dump_proposals.py; "" = no negative chips.
    _C.SNIPER.NEG.PROPOSALS_FILE = ""
    # Per scale: a negative chip is kept only if it holds at least this many proposals that lie
    # outside every positive chip. Original SNIPER: 25 at the finest scale, 10 otherwise.
    _C.SNIPER.NEG.MIN_PROPOSALS = (25, 10, 10)
    # Negative chips sampled per image per epoch (original SNIPER: 2).
    _C.SNIPER.NEG.CHIPS_PER_IMAGE = 2
    # Proposal dump: proposals kept per image and scale, and the NMS IoU applied first.
    _C.SNIPER.NEG.TOPK_PER_SCALE = 300
    _C.SNIPER.NEG.NMS_THRESH = 0.7

    # ---------------------------------------------------------------------------------------
    # Label assignment with ignored boxes
    # ---------------------------------------------------------------------------------------
    # RPN anchors whose IoU with any invalid (ignored) box exceeds this are labelled -1 (ignored).
    _C.SNIPER.RPN_IGNORE_IOU = 0.3
    # ROI-head proposals whose best match is an invalid box with at least this IoU are left out of
    # sampling (neither foreground nor background).
    _C.SNIPER.ROI_IGNORE_IOU = 0.5

    # ---------------------------------------------------------------------------------------
    # Data loading robustness
    # ---------------------------------------------------------------------------------------
    # False: a corrupt or missing image raises an error naming the file. True: the chip is skipped,
    # counted and logged, and another chip is loaded in its place.
    _C.SNIPER.SKIP_BAD_IMAGES = False

    # ---------------------------------------------------------------------------------------
    # Reading images (sniper_d2/image_io.py: one windowed reader, rasterio/GDAL)
    # ---------------------------------------------------------------------------------------
    _C.SNIPER.INPUT = CN()
    # An image with more pixels (H * W, after EXIF rotation) is refused with an error naming this
    # key. Images are read by windows, so memory does not grow with the image; the limit guards
    # against absurd headers. Default: 10 gigapixels (a 100k x 100k mosaic); <= 0: no limit.
    _C.SNIPER.INPUT.MAX_IMAGE_PIXELS = 10_000_000_000

    # ---------------------------------------------------------------------------------------
    # Multi-scale tiled inference
    # ---------------------------------------------------------------------------------------
    _C.SNIPER.TEST = CN()
    # Test scales (resize factors; FIT_SCALE = long side fit to CHIP_SIZE, the same coarsest level
    # as in training; tiling only bounds memory and does not change scales).
    _C.SNIPER.TEST.SCALES = (3.0, 1.667, FIT_SCALE)
    # Per scale, detections are kept only if lo < sqrt(w*h) <= hi in original pixels (-1 = inf).
    # Default: the original SNIPER's, wider than its training ranges: (0, 90], (32, 180], (75, inf)
    # (as in configs/sniper_r50_fpn.yaml; not measured in this project). On the synthetic demo
    # (configs/sniper_tiny_cpu.yaml) test ranges BELOW the training ranges, (0.8 lo, 0.7 hi) as
    # tools/compute_scale_stats.py suggests, measured better (AP_large 26.8 -> 38.2, docs/planning.md).
    _C.SNIPER.TEST.VALID_RANGES = ((0.0, 90.0), (32.0, 180.0), (75.0, NO_UPPER_BOUND))
    # Tiles: square windows of TILE_SIZE scaled pixels, overlapping by TILE_OVERLAP scaled pixels.
    # The overlap should exceed the largest object kept at a scale, so one tile sees it whole.
    _C.SNIPER.TEST.TILE_SIZE = 1024
    _C.SNIPER.TEST.TILE_OVERLAP = 256
    # Tiles run through the model per forward pass.
    _C.SNIPER.TEST.TILE_BATCH_SIZE = 4
    # Data-loader worker processes cutting tiles while the model runs (tools/infer.py, evaluation).
    # -1: DATALOADER.NUM_WORKERS when the model runs on a GPU, 0 on the CPU, where the model's threads
    # already use every core and a worker competes with them (about 10% slower on 2 cores,
    # docs/inference.md).
    _C.SNIPER.TEST.NUM_WORKERS = -1
    # Merge across tiles and scales: "nms" (torchvision batched_nms), "nested_nms" (NMS that also
    # removes a box mostly inside a kept box of its class) or "soft_nms" (Gaussian).
    _C.SNIPER.TEST.MERGE_METHOD = "nms"
    # NMS / nested_nms: a box with IoU above this with a kept, higher-scoring box of its class goes.
    _C.SNIPER.TEST.MERGE_IOU = 0.5
    # nested_nms: a box whose intersection with a kept box of its class exceeds this fraction of the
    # smaller box's area goes too (SAHI's "IOS").
    _C.SNIPER.TEST.MERGE_IOS = 0.8
    _C.SNIPER.TEST.SOFT_NMS_SIGMA = 0.55
    # Cross-class merge after the per-class one (SAHI's class-agnostic postprocessing): where boxes
    # of different classes overlap with IoU above this, only the highest-scoring one stays (one class
    # per object). -1 = off: classes never suppress each other. Off by default: it costs AP, as COCO
    # AP scores each class apart and a second class's box is the hit when the first class is wrong
    # (benchmarks/merge_ap.py, 3 demo models: validation AP -4.0, -4.0, -5.7 at 0.5 and -2.3, -0.7,
    # -3.1 at 0.7; results/merge_ap.json). Set it (0.5) for drawn or counted results, one box per object.
    _C.SNIPER.TEST.CROSS_CLASS_IOU = -1.0
    # detectron2's own keys set the rest (MOVED_KEYS): MODEL.ROI_HEADS.SCORE_THRESH_TEST drops each
    # tile's detections below it before merging; TEST.DETECTIONS_PER_IMAGE caps the detections of
    # each tile and of each full image after merging (also COCOEvaluator's max_dets_per_image).
    # Evaluation of huge images (sniper_d2/evaluation_windows.py): an image with at least
    # EVAL_WINDOWS_MIN_PIXELS pixels or EVAL_WINDOWS_MIN_OBJECTS annotations is evaluated by square
    # windows of EVAL_WINDOW_SIZE px: objects and detections go to the window of their box centre and
    # are matched within it, in the same COCO evaluation as the other images (plain COCO matching
    # builds one IoU matrix of all the image's detections by all its objects). TEST.DETECTIONS_PER_IMAGE
    # then caps each window. EVAL_WINDOW_SIZE 0 turns this off.
    _C.SNIPER.TEST.EVAL_WINDOW_SIZE = 1024
    _C.SNIPER.TEST.EVAL_WINDOWS_MIN_PIXELS = 64_000_000
    _C.SNIPER.TEST.EVAL_WINDOWS_MIN_OBJECTS = 5000
    # "full": every scale over the whole image. "autofocus": the coarsest scale over the whole
    # image, each finer scale only inside the focus chips of the scale above (AutoFocus, Najibi et
    # al., ICCV 2019); needs a model with a focus head (SNIPER.AUTOFOCUS below).
    _C.SNIPER.TEST.MODE = "full"
    # Precision of the backbone (ResNet + FPN) at inference, through torch.autocast; its features go
    # to the RPN and ROI heads as float32 (sniper_d2/inference/precision.py): "fp32", "bf16", "fp16"
    # (CUDA only) or "auto" = bf16 where the hardware runs it natively (CPUs with AMX-BF16, e.g. Xeon
    # Sapphire Rapids and later; GPUs with bfloat16), fp32 elsewhere (bf16 is emulated, slower, on
    # CPUs without AMX). AP cost and speed: benchmarks/precision_ap.py, docs/inference.md.
    _C.SNIPER.TEST.PRECISION = "auto"

    # ---------------------------------------------------------------------------------------
    # AutoFocus: a focus head predicting where objects too small for the current scale are
    # (sniper_d2/modeling/focus.py), and focus chips at test time (sniper_d2/inference/autofocus.py)
    # ---------------------------------------------------------------------------------------
    _C.SNIPER.AUTOFOCUS = CN()
    # Build the focus head (MODEL.META_ARCHITECTURE must be "SniperFocusRCNN"): trained on the same
    # chips, in the same run, next to the detector; its map is returned at inference.
    _C.SNIPER.AUTOFOCUS.ENABLED = False
    # FPN level the head reads. The paper uses stride 16 on 512 px chips (32 x 32 cells per chip);
    # "p3" (stride 8) gives the same 32 x 32 cells on 256 px chips.
    _C.SNIPER.AUTOFOCUS.IN_FEATURE = "p4"
    # Channels of the head's 3x3 conv (then a 1x1 conv to one logit per cell).
    _C.SNIPER.AUTOFOCUS.HEAD_CHANNELS = 64
    # Focus labels per chip, on sqrt(w*h) of each (unclipped) box in CHIP pixels (scaled pixels):
    # a cell is positive (focus) where it overlaps a box of size in [lo, hi). Boxes below lo and in
    # [hi, IGNORE_UP_TO) make their cells don't-care; larger boxes leave them negative. Release of
    # the authors (512 px chips): (5, 64), don't care up to 90.
    _C.SNIPER.AUTOFOCUS.POSITIVE_RANGE = (5.0, 64.0)
    _C.SNIPER.AUTOFOCUS.IGNORE_UP_TO = 90.0
    # Chip pixels: a positive box narrower or shorter than this marks the cells of a box grown about
    # its centre to this side (a tiny object marks a block of cells, not one). 0: boxes as they are.
    _C.SNIPER.AUTOFOCUS.POSITIVE_MIN_SIDE = 0.0
    # Crowd / ignore-region boxes (iscrowd) make every cell they overlap don't-care.
    _C.SNIPER.AUTOFOCUS.CROWD_AS_IGNORE = True
    # Weight of the focus loss (binary cross-entropy, mean over cells that are not don't-care).
    _C.SNIPER.AUTOFOCUS.LOSS_WEIGHT = 1.0
    # Weight of positive (focus) cells in that cross-entropy (BCE pos_weight): focus cells are rare,
    # > 1 pushes their probabilities up (the test THRESHOLDS then mean something else). 1: plain BCE.
    _C.SNIPER.AUTOFOCUS.POSITIVE_WEIGHT = 1.0
    # Test time, one entry per SNIPER.TEST.SCALES entry (same order; the finest scale's entry is
    # unused): a cell of that scale's map is focus when its probability is >= THRESHOLDS; the focus
    # cells are dilated by DILATIONS cells (a (2d+1) x (2d+1) square); each connected component
    # gives one chip, grown to at least MIN_CHIP_SIZES pixels of the NEXT finer scale (the pixels the
    # detector sees). Overlapping chips are merged. Release: thresholds 0.2 (middle), 0.02
    # (coarsest), dilation 3, chips 256 / 320 px.
    _C.SNIPER.AUTOFOCUS.THRESHOLDS = (0.2, 0.2, 0.02)
    _C.SNIPER.AUTOFOCUS.DILATIONS = (3, 3, 3)
    _C.SNIPER.AUTOFOCUS.MIN_CHIP_SIZES = (320, 320, 256)
    # Hand-off between scales: a scale's lower test-range limit (SNIPER.TEST.VALID_RANGES) leaves
    # small objects to the next finer scale, which in AutoFocus runs only inside focus chips. True: a
    # scale keeps its detections below that limit outside the finer scale's chips (where no finer
    # scale looked) and drops them inside; False: the range applies everywhere, as in full inference.
    _C.SNIPER.AUTOFOCUS.KEEP_SMALL_OUTSIDE_CHIPS = True
