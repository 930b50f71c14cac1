"""Config keys of sniper_d2, all under ``cfg.SNIPER``.

Coordinate and unit conventions used by every key below:
  * a *scale* is a resize factor applied to the original image (never a pixel size);
  * sizes of objects are ``sqrt(w * h)`` of the box measured in ORIGINAL-image pixels;
  * chip sizes and strides are in pixels of the SCALED image (what the network sees).

The value types :class:`ValidRange`, :func:`is_fit` and :func:`parse_scales` decode the two
config conventions ("scale -1 = fit", "upper bound -1 = infinity") once, for every module.

Numpy only: :func:`add_sniper_config` imports detectron2's ``CfgNode`` lazily, so that
``import sniper_d2.config`` stays cheap.
"""

import math
from dataclasses import dataclass

__all__ = ["FIT_SCALE", "NO_UPPER_BOUND", "ConfigError", "MOVED_KEYS", "ValidRange", "is_fit", "parse_scales",
           "require_config_file", "check_runtime_config", "add_sniper_config"]

# A scale entry equal to this value means "resize the whole image so that its long side equals
# CHIP_SIZE": a single chip then covers the whole image (SNIPER's coarsest pyramid level).
FIT_SCALE = -1.0
# A valid-range upper bound equal to this value in a config means "no upper bound" (infinity).
NO_UPPER_BOUND = -1.0


class ConfigError(ValueError):
    """A config whose keys exist but whose values cannot work together (message names them)."""


# Keys that sniper_d2 had and that duplicated one of detectron2's: old name -> the key to set instead.
# A config file or command line that still sets an old one is refused naming the new one.
MOVED_KEYS = {
    "SNIPER.TEST.MAX_DETECTIONS": "TEST.DETECTIONS_PER_IMAGE",  # per full image after merging, too
    "SNIPER.TEST.SCORE_THRESH": "MODEL.ROI_HEADS.SCORE_THRESH_TEST",  # per tile, before merging
}


def require_config_file(config_file):
    """Raise ``FileNotFoundError("config file <path> not found")`` unless ``config_file`` is a file:
    the one message of every config reader (:func:`sniper_d2.cli.setup_cfg`, :func:`sniper_d2.stats.read_config_yaml`)."""
    import os

    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file {config_file} not found")


def is_fit(scale_entry):
    """True when a ``SCALES`` entry is ``FIT_SCALE``: the image resized so its long side is ``CHIP_SIZE``."""
    return float(scale_entry) == FIT_SCALE


@dataclass(frozen=True)
class ValidRange:
    """The object sizes one pyramid scale is responsible for: ``sqrt(w * h)`` in ORIGINAL-image pixels.

    Attributes:
        lo (float): lower bound, >= 0.
        hi (float): upper bound, > lo; ``math.inf`` for none (written ``-1`` in configs).

    Training and test use the two half-open variants: a training box is valid when
    ``lo <= size < hi`` (:meth:`train_mask`), a test detection is kept when ``lo < size <= hi``
    (:meth:`test_mask`).
    """

    lo: float
    hi: float = math.inf

    def __post_init__(self):
        lo, hi = float(self.lo), float(self.hi)
        if not (math.isfinite(lo) and lo >= 0 and hi > lo):  # NaN fails too
            raise ConfigError(f"valid range ({self.lo}, {self.hi}) is empty or negative: it needs 0 <= lo < hi "
                              f"(hi = {NO_UPPER_BOUND:g} for no upper bound)")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def parse(cls, value):
        """A ``ValidRange`` from a config pair ``(lo, hi)`` (hi ``-1``, ``inf`` or None: no upper
        bound), or ``value`` itself when it already is one.

        Raises:
            ConfigError: not a pair of numbers, or an empty / negative range.
        """
        if isinstance(value, cls):
            return value
        try:
            lo, hi = value
            hi = math.inf if hi is None or float(hi) == NO_UPPER_BOUND else float(hi)
            lo = float(lo)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"valid range {value!r} is not a pair (lo, hi) of numbers") from e
        return cls(lo, hi)

    def __iter__(self):
        """``lo, hi = valid_range`` unpacks the bounds (hi = ``math.inf`` when there is none)."""
        return iter((self.lo, self.hi))

    def to_cfg(self):
        """``(lo, hi)`` as a config writes it: hi ``-1`` for no upper bound (JSON-ready floats)."""
        return (self.lo, NO_UPPER_BOUND if math.isinf(self.hi) else self.hi)

    def train_mask(self, sizes):
        """(N,) bool: ``lo <= size < hi`` (a box is a valid training positive at this scale).

        Args:
            sizes: (N,) ``sqrt(w * h)`` in original pixels (numpy array or torch tensor).
        """
        return (sizes >= self.lo) & (sizes < self.hi)

    def test_mask(self, sizes):
        """(N,) bool: ``lo < size <= hi`` (a test detection is kept at this scale).

        Args:
            sizes: (N,) ``sqrt(w * h)`` in original pixels (numpy array or torch tensor).
        """
        return (sizes > self.lo) & (sizes <= self.hi)


def parse_scales(scales, valid_ranges, section="SNIPER"):
    """Decode ``<section>.SCALES`` and ``<section>.VALID_RANGES`` together.

    Args:
        scales: resize factors (> 0, finite) or ``FIT_SCALE`` (-1).
        valid_ranges: one ``(lo, hi)`` per scale (hi -1 = infinity), or :class:`ValidRange` s.
        section (str): "SNIPER" or "SNIPER.TEST", for the messages.

    Returns:
        (scales tuple[float], valid_ranges tuple[ValidRange]), of equal, non-zero length.

    Raises:
        ConfigError: naming the key and the entry that is wrong.
    """
    scales, valid_ranges = tuple(scales), tuple(valid_ranges)
    if not scales:
        raise ConfigError(f"{section}.SCALES is empty: give at least one scale")
    if len(scales) != len(valid_ranges):
        raise ConfigError(f"{section}.SCALES has {len(scales)} entries but {section}.VALID_RANGES has "
                          f"{len(valid_ranges)}: give one (lo, hi) range per scale")
    out = []
    for s in scales:
        try:
            s = float(s)
        except (TypeError, ValueError):
            s = math.nan
        if not (is_fit(s) or (s > 0 and math.isfinite(s))):
            raise ConfigError(f"{section}.SCALES entry {s} is neither a positive factor nor "
                              f"{FIT_SCALE:g} (fit the long side to CHIP_SIZE)")
        out.append(s)
    ranges = []
    for r in valid_ranges:
        try:
            ranges.append(ValidRange.parse(r))
        except ConfigError as e:
            raise ConfigError(f"{section}.VALID_RANGES: {e}") from e
    return tuple(out), tuple(ranges)


def check_runtime_config(cfg, cuda_available, training=True):
    """Refuse settings that detectron2 would only reject deep inside training.

    Args:
        cfg (CfgNode): the merged config. cuda_available (bool): ``torch.cuda.is_available()``.
        training (bool): the config is used to train (False: inference only, which never uses AMP).

    Raises:
        ConfigError: training with ``SOLVER.AMP.ENABLED`` without a CUDA device (detectron2's
            AMPTrainer uses CUDA autocast and asserts CUDA on its first step).
    """
    if training and cfg.SOLVER.AMP.ENABLED and not (cuda_available and str(cfg.MODEL.DEVICE).startswith("cuda")):
        raise ConfigError(f"SOLVER.AMP.ENABLED needs a CUDA device, but MODEL.DEVICE is {cfg.MODEL.DEVICE!r}"
                          f"{'' if cuda_available else ' and no GPU is available'}: set SOLVER.AMP.ENABLED False")


def schedule_follows_max_iter(cfg, config_file, opts):
    """Make ``SOLVER.STEPS`` follow ``SOLVER.MAX_ITER``, and refuse steps at or past the end.

    When ``SOLVER.MAX_ITER`` is changed without ``SOLVER.STEPS``, on the command line (``opts``) or
    in a config file over its ``_BASE_``, the steps it came with are scaled by ``new MAX_ITER / old
    MAX_ITER`` (``STEPS: (240, 280)`` of 300 iterations become ``(960, 1120)`` for ``MAX_ITER
    1200``). Steps given next to MAX_ITER (same file, or on the command line) are kept as given.
    detectron2's own defaults (no MAX_ITER/STEPS in any file) are left alone.

    Args:
        cfg (CfgNode): the merged config (modified in place; not frozen).
        config_file (str): the top config file. opts (list[str]): the command-line KEY VALUE pairs.

    Returns:
        str or None: what was changed, for the log.

    Raises:
        ConfigError: a step at or past ``SOLVER.MAX_ITER`` (detectron2 would drop it silently).
    """
    keys = set(opts[0::2]) if opts else set()
    changed = None
    if "SOLVER.STEPS" not in keys:
        file_max, file_steps = _file_schedule(config_file)
        if file_max and file_steps is not None:
            new = _scale(file_steps, file_max, cfg.SOLVER.MAX_ITER)
            if tuple(new) != tuple(cfg.SOLVER.STEPS):
                changed = (f"SOLVER.STEPS {tuple(cfg.SOLVER.STEPS)} follow SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER}: "
                           f"now {new} (steps given only for another MAX_ITER are scaled with it)")
                cfg.SOLVER.STEPS = new
    late = [s for s in cfg.SOLVER.STEPS if s >= cfg.SOLVER.MAX_ITER]
    if late:
        raise ConfigError(f"SOLVER.STEPS {tuple(cfg.SOLVER.STEPS)} has steps at or past SOLVER.MAX_ITER "
                          f"{cfg.SOLVER.MAX_ITER}: give SOLVER.STEPS inside the schedule, or change only MAX_ITER "
                          f"and let the steps follow")
    return changed


def _scale(steps, old_max, new_max):
    """Steps of an ``old_max`` schedule for a ``new_max`` one; steps that would land at or past the
    end of a very short schedule are left out (no LR drop there)."""
    scaled = (int(round(s * float(new_max) / float(old_max))) for s in steps)
    return tuple(sorted({s for s in scaled if 0 < s < new_max}))


def _file_schedule(config_file, _depth=0):
    """(MAX_ITER, STEPS) a config file's chain gives, with the rule applied file by file: a file
    that sets MAX_ITER without STEPS scales its ``_BASE_``'s steps. (None, None) when unknown."""
    import os

    import yaml

    if _depth > 20 or not os.path.isfile(config_file):
        return None, None
    with open(config_file) as f:
        data = yaml.safe_load(f) or {}
    solver = data.get("SOLVER") or {}
    base = data.get("_BASE_")
    base_max, base_steps = None, None
    if base:
        base_path = base if os.path.isabs(base) else os.path.join(os.path.dirname(os.path.abspath(config_file)), base)
        base_max, base_steps = _file_schedule(base_path, _depth + 1)
    max_iter = solver.get("MAX_ITER", base_max)
    if "STEPS" in solver:
        steps = solver["STEPS"]
        if isinstance(steps, str):
            import ast

            steps = ast.literal_eval(steps)
        steps = tuple(int(x) for x in steps)
    elif base_steps is not None and base_max and max_iter:
        steps = _scale(base_steps, base_max, max_iter)
    else:
        steps = base_steps
    return max_iter, steps


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
