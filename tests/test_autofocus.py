"""AutoFocus: focus labels, focus chips, the focus model, and an oracle of the recursive inference.

The oracle: a stand-in detector sees the coloured rectangles of each tile (as in
test_stitching_oracle.py) but misses those under 12 tile pixels, and its focus map is built from the
ground truth (cells on rectangles too small for the tile's scale). AutoFocus inference through it
must find every object that full multi-scale inference finds, while processing fewer pixels.
"""

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from torchvision.ops import box_iou

from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams
from sniper_d2.geometry import tile_windows
from sniper_d2.inference.autofocus import (drop_handed_over, focus_chips, focus_components, full_inference_pixels,
                                           grow_boxes, merge_overlapping, region_windows)
from sniper_d2.modeling.focus import focus_labels


# ------------------------------------------------------------------------------------------------
# Labels
# ------------------------------------------------------------------------------------------------
def test_focus_labels_positive_ignore_negative_exactly():
    # 40 x 60 input, stride 10: 4 x 6 cells. Positive band [5, 20), don't care below 5 and [20, 30).
    boxes = torch.tensor([
        [0, 0, 40, 40],      # L: size 40 -> negative (large)
        [12, 12, 18, 18],    # P: size 6 -> positive, inside L (positive wins)
        [30, 0, 55, 25],     # M: size 25 -> don't care (margin band)
        [52, 32, 54, 34],    # T: size 2 -> don't care (too small even for the finer scale)
        [20, 30, 30, 40],    # C: size 10 but a crowd region -> don't care
        [40, 30, 50, 40],    # P2: size 10, exactly one cell (edges on cell borders touch no neighbour)
    ], dtype=torch.float32)
    sizes = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    crowd = torch.tensor([False, False, False, False, True, False])
    labels = focus_labels(boxes, sizes, crowd, (4, 6), 10, (5.0, 20.0), 30.0)
    expected = torch.tensor([[0, 0, 0, -1, -1, -1],
                             [0, 1, 0, -1, -1, -1],
                             [0, 0, 0, -1, -1, -1],
                             [0, 0, -1, 0, 1, -1]], dtype=torch.int8)
    assert torch.equal(labels, expected), labels


def test_focus_labels_use_the_unclipped_size():
    # A large object cut to a 5 px sliver by the chip border is not "small": its real size counts.
    boxes = torch.tensor([[0.0, 0.0, 5.0, 40.0]])
    labels = focus_labels(boxes, torch.tensor([200.0]), torch.tensor([False]), (4, 4), 10, (0.0, 24.0), 40.0)
    assert (labels == 0).all()
    labels = focus_labels(boxes, torch.tensor([14.0]), torch.tensor([False]), (4, 4), 10, (0.0, 24.0), 40.0)
    assert labels[:, 0].eq(1).all() and labels[:, 1:].eq(0).all()


def test_focus_labels_grow_tiny_positives_about_their_centre():
    # Stride 10. A 4 px object at (23-27, 23-27) marks one cell; grown to 20 px (13-33) it marks the
    # 3 x 3 block around it. A don't-care box is not grown; a 30 px positive is larger than 20: as is.
    boxes = torch.tensor([[23.0, 23, 27, 27], [71, 1, 73, 3], [0, 50, 30, 80]])
    sizes = torch.tensor([4.0, 2.0, 30.0])
    crowd = torch.tensor([False, False, False])
    plain = focus_labels(boxes, sizes, crowd, (8, 8), 10, (3.0, 40.0), 50.0)
    grown = focus_labels(boxes, sizes, crowd, (8, 8), 10, (3.0, 40.0), 50.0, positive_min_side=20.0)
    assert plain[2, 2] == 1 and (plain[1:4, 1:4] == 1).sum() == 1
    assert (grown[1:4, 1:4] == 1).all() and grown[0, 7] == -1 and (grown[0, 6:] == -1).sum() == 1
    assert torch.equal(grown[5:8, 0:3], plain[5:8, 0:3]) and (grown[5:8, 0:3] == 1).all()
    assert (grown == 1).sum() == 9 + 9 and (plain == 1).sum() == 1 + 9


def test_focus_loss_positive_weight_scales_the_positive_cells_only():
    from types import SimpleNamespace

    from sniper_d2.modeling.focus import SniperFocusRCNN

    inst = Instances((32, 32))
    inst.gt_boxes = Boxes(torch.tensor([[0.0, 0, 8, 8]]))
    logits = torch.zeros((1, 4, 4))  # p = 0.5 everywhere: BCE log(2) per cell
    losses = []
    for w in (1.0, 3.0):
        head = SimpleNamespace(focus_stride=8, crowd_as_ignore=True, positive_range=(0.0, 16.0), ignore_up_to=16.0,
                               positive_min_side=0.0, positive_weight=w, focus_loss_weight=1.0)
        losses.append(float(SniperFocusRCNN.focus_loss(head, logits, [inst])))
    assert losses[0] == pytest.approx(np.log(2))
    assert losses[1] == pytest.approx((3 * np.log(2) + 15 * np.log(2)) / 16)


def test_focus_labels_without_boxes_are_all_negative():
    labels = focus_labels(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.bool), (3, 5), 8,
                          (0.0, 24.0), 40.0)
    assert labels.shape == (3, 5) and (labels == 0).all()


# ------------------------------------------------------------------------------------------------
# Focus chips
# ------------------------------------------------------------------------------------------------
def test_focus_components_threshold_dilation_and_map_border():
    fmap = np.zeros((10, 12), np.float32)
    fmap[5, 5] = 0.9
    fmap[0, 0] = 0.4  # below the threshold
    fmap[9, 11] = 0.6  # corner: dilation stops at the map border
    comps = focus_components(fmap, 0.5, 1)
    assert sorted(map(tuple, comps.tolist())) == [(4, 4, 7, 7), (10, 8, 12, 10)]
    assert sorted(map(tuple, focus_components(fmap, 0.5, 0).tolist())) == [(5, 5, 6, 6), (11, 9, 12, 10)]
    # Dilation joins two cells 3 apart into one component.
    fmap2 = np.zeros((10, 12), np.float32)
    fmap2[2, 2] = fmap2[2, 5] = 1.0
    assert focus_components(fmap2, 0.5, 1).tolist() == [[1, 1, 7, 4]]
    assert len(focus_components(fmap2, 0.5, 0)) == 2
    assert focus_components(np.zeros((4, 4)), 0.5, 2).shape == (0, 4)


def test_grow_boxes_min_size_centre_and_image_border():
    grown = grow_boxes(np.array([[32, 32, 56, 56], [224, 144, 240, 160], [0, 0, 100, 10]]), 64, (160, 240))
    np.testing.assert_allclose(grown, [[12, 12, 76, 76], [176, 96, 240, 160], [0, 0, 100, 64]])
    # An image smaller than the minimum: the chip is the whole side.
    np.testing.assert_allclose(grow_boxes(np.array([[10, 10, 20, 20]]), 400, (160, 240)), [[0, 0, 240, 160]])


def test_merge_overlapping_is_transitive_and_repeats_after_unions():
    chain = np.array([[0, 0, 10, 10], [8, 0, 18, 10], [16, 0, 26, 10], [100, 100, 110, 110]])
    merged = merge_overlapping(chain)
    assert sorted(map(tuple, merged.tolist())) == [(0, 0, 26, 10), (100, 100, 110, 110)]
    # A and B overlap; their union (not either alone) overlaps D.
    boxes = np.array([[0, 0, 10, 4], [8, 0, 12, 12], [0, 8, 4, 12.5], [20, 20, 30, 30]])
    assert sorted(map(tuple, merge_overlapping(boxes).tolist())) == [(0, 0, 12, 12.5), (20, 20, 30, 30)]
    # Touching boxes (zero-area intersection) stay apart.
    assert len(merge_overlapping(np.array([[0, 0, 10, 10], [10, 0, 20, 10]]))) == 2


def test_focus_chips_map_to_the_next_scale_grow_merge_and_stay_inside():
    # Map of the image at scale 0.5 (original 160 x 240 -> 80 x 120 scaled, stride 4 -> 20 x 30 cells);
    # chips for scale 1.0 (160 x 240), at least 64 px.
    fmap = np.zeros((20, 30), np.float32)
    fmap[5, 5] = fmap[5, 12] = 0.9  # two components whose grown chips overlap -> merged
    fmap[19, 29] = 0.9  # bottom-right corner
    chips = focus_chips(fmap, 4, 0.5, 0.5, 1, 1.0, (160, 240), 64)
    assert sorted(map(tuple, chips.tolist())) == [(12, 12, 132, 76), (176, 96, 240, 160)]
    # The same at scale 2.0: pixels double, the minimum size is in the target scale's pixels.
    chips2 = focus_chips(fmap, 4, 0.5, 0.5, 1, 2.0, (160, 240), 64)
    assert sorted(map(tuple, chips2.tolist())) == [(56, 56, 120, 120), (168, 56, 232, 120), (416, 256, 480, 320)]
    assert chips2.dtype == np.int64
    assert focus_chips(np.zeros((20, 30)), 4, 0.5, 0.5, 1, 1.0, (160, 240), 64).shape == (0, 4)


def test_region_windows_cover_each_region_inside_it_and_come_ordered_by_size():
    regions = np.array([[0, 0, 700, 300], [800, 0, 1056, 256], [100, 400, 400, 640]])
    windows = region_windows(regions, 512, 128)
    sides = np.stack([windows[:, 3] - windows[:, 1], windows[:, 2] - windows[:, 0]], 1)
    assert (np.diff(sides[:, 0]) >= 0).all()  # by height, then width
    assert all((np.diff(sides[h == sides[:, 0], 1]) >= 0).all() for h in np.unique(sides[:, 0]))
    assert (sides <= 512).all()
    for r in regions:  # the windows inside a region cover it exactly (as tiling that region alone)
        own = windows[(windows[:, 0] >= r[0]) & (windows[:, 1] >= r[1]) & (windows[:, 2] <= r[2]) & (windows[:, 3] <= r[3])]
        mask = np.zeros((r[3] - r[1], r[2] - r[0]), bool)
        for x0, y0, x1, y1 in (own - [r[0], r[1], r[0], r[1]]).tolist():
            mask[y0:y1, x0:x1] = True
        assert mask.all()
    assert len(windows) == sum(len(tile_windows((r[3] - r[1], r[2] - r[0]), 512, 128)) for r in regions)
    assert region_windows(np.zeros((0, 4)), 512, 128).shape == (0, 4)


# ------------------------------------------------------------------------------------------------
# The focus model
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def focus_model():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import sniper_d2.modeling  # noqa: F401
    from sniper_d2.config import add_sniper_config

    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file("configs/sniper_tiny_cpu_autofocus.yaml")
    torch.manual_seed(0)
    return build_model(cfg)


def test_focus_model_adds_the_focus_loss_and_returns_maps(focus_model):
    from detectron2.utils.events import EventStorage

    inst = Instances((256, 256))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10, 20, 20], [50, 50, 150, 150]]))
    inst.gt_classes = torch.tensor([0, 1])
    inst.gt_valid = torch.tensor([False, True])  # too small for the chip's range: still a focus positive
    inst.gt_sizes = torch.tensor([10.0, 100.0])
    inst.gt_crowd = torch.tensor([False, False])
    focus_model.train()
    with EventStorage(0):
        losses = focus_model([{"image": torch.zeros(3, 256, 256, dtype=torch.uint8), "instances": inst,
                               "height": 256, "width": 256}])
    assert "loss_focus" in losses and torch.isfinite(losses["loss_focus"]) and losses["loss_focus"] > 0
    losses["loss_focus"].backward()
    assert focus_model.focus_head.logits.weight.grad.abs().sum() > 0
    focus_model.eval()
    with torch.no_grad():
        out = focus_model([{"image": torch.zeros(3, 100, 200, dtype=torch.uint8), "height": 100, "width": 200}])
    assert out[0]["focus_stride"] == 8 and tuple(out[0]["focus"].shape) == (13, 25)
    assert ((out[0]["focus"] >= 0) & (out[0]["focus"] <= 1)).all()
    assert "instances" in out[0]


# ------------------------------------------------------------------------------------------------
# Oracle: AutoFocus through a stand-in model with ground-truth focus maps
# ------------------------------------------------------------------------------------------------
ORACLE_STRIDE = 8
SMALLEST_DETECTED = 12.0  # tile pixels: the stand-in misses smaller rectangles
# Each scale hands objects under 50 of its pixels to the next finer one (the 0.5 scale keeps > 100
# original px, the 1x scale hands < 50 px to 2x, which keeps up to 40 and down to 12 / 2 = 6).
FOCUS_BAND = (0.0, 50.0)
PARAMS = dict(scales=(2.0, 1.0, 0.5), valid_ranges=((0, 40), (30, 120), (100, -1)), tile_size=256, tile_overlap=128,
              tile_batch_size=3, score_thresh=0.0, max_detections=200)


class FocusOracleModel(torch.nn.Module):
    """Detects the rectangles of each tile that are at least SMALLEST_DETECTED px; its focus map is
    the focus labels of all visible rectangles (positive band FOCUS_BAND), as probabilities."""

    def forward(self, inputs):
        from test_stitching_oracle import visible_rectangles

        outputs = []
        for item in inputs:
            tile = item["image"].permute(1, 2, 0).numpy()
            boxes, classes = visible_rectangles(tile)
            boxes, classes = torch.as_tensor(boxes), torch.as_tensor(classes)
            sizes = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
            seen = sizes >= SMALLEST_DETECTED
            inst = Instances(tile.shape[:2])
            inst.pred_boxes = Boxes(boxes[seen])
            inst.scores = torch.ones(int(seen.sum()))
            inst.pred_classes = classes[seen]
            grid = (-(-tile.shape[0] // ORACLE_STRIDE), -(-tile.shape[1] // ORACLE_STRIDE))
            labels = focus_labels(boxes, sizes, torch.zeros(len(boxes), dtype=torch.bool), grid, ORACLE_STRIDE,
                                  FOCUS_BAND, FOCUS_BAND[1])
            outputs.append({"instances": inst, "focus": (labels == 1).float(), "focus_stride": ORACLE_STRIDE})
        return outputs


def _found(det, gt_boxes):
    """(G,) bool: ground-truth boxes matched by a detection with IoU >= 0.9."""
    if len(det["boxes"]) == 0:
        return torch.zeros(len(gt_boxes), dtype=torch.bool)
    return box_iou(gt_boxes, det["boxes"]).max(dim=1).values >= 0.9


def test_autofocus_with_ground_truth_focus_finds_everything_full_inference_finds(tmp_path):
    import json

    import cv2
    from test_stitching_oracle import make_dataset

    gt = json.load(open(make_dataset(str(tmp_path), n=2, seed=3)))
    full = MultiScaleTiledPredictor(FocusOracleModel(), TiledInferenceParams(**PARAMS))
    auto = MultiScaleTiledPredictor(FocusOracleModel(), TiledInferenceParams(
        **PARAMS, mode="autofocus", focus_thresholds=(0.5, 0.5, 0.5), focus_dilations=(1, 1, 1),
        focus_min_chip_sizes=(128, 128, 128)))
    total_full = total_auto = 0
    for entry in gt["images"]:
        image = cv2.imread(str(tmp_path / entry["file_name"]))
        boxes = torch.tensor([a["bbox"] for a in gt["annotations"] if a["image_id"] == entry["id"]], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        det_full, det_auto = full(image), auto(image)
        found_full, found_auto = _found(det_full, boxes), _found(det_auto, boxes)
        assert found_full.sum() >= len(boxes) - 1  # guard: full inference finds (nearly) all
        assert (found_auto | ~found_full).all(), (found_full, found_auto)
        assert len(det_auto["boxes"]) == len(det_full["boxes"])  # no extra (cut) boxes either
        np.testing.assert_array_equal(det_full["pixels"], full_inference_pixels(image.shape[:2], full.params))
        assert det_auto["pixels"][2] == det_full["pixels"][2]  # the coarsest scale runs everywhere
        total_full += int(det_full["pixels"].sum())
        total_auto += int(det_auto["pixels"].sum())
        assert set(det_auto["autofocus"]["maps"]) == {2, 1}
    assert total_auto < total_full


class BlindFocusOracleModel(FocusOracleModel):
    """FocusOracleModel whose focus map is all zeros: no finer scale ever runs."""

    def forward(self, inputs):
        outputs = super().forward(inputs)
        for out in outputs:
            out["focus"] = torch.zeros_like(out["focus"])
        return outputs


def test_drop_handed_over_drops_small_boxes_centred_in_chips_only():
    boxes = torch.tensor([[10, 10, 20, 20],      # small, centre (15, 15) inside the chip
                          [60, 60, 70, 70],      # small, centre outside
                          [0, 0, 50, 50],        # large (size 50 > lo), centre inside
                          [95, 10, 105, 20],     # small, centre x = 100: the chip's open right edge
                          [90, 10, 100, 20]], dtype=torch.float32)  # small, centre x = 95 inside
    scores, classes = torch.arange(5, dtype=torch.float32), torch.arange(5)
    chips = np.array([[0, 0, 100, 40]], np.float64)
    b, s, c = drop_handed_over((boxes, scores, classes), 30.0, chips)
    assert c.tolist() == [1, 2, 3]
    assert torch.equal(b, boxes[[1, 2, 3]]) and torch.equal(s, scores[[1, 2, 3]])
    b, _, c = drop_handed_over((boxes, scores, classes), 30.0, np.zeros((0, 4)))
    assert c.tolist() == [0, 1, 2, 3, 4]  # no chips: nothing was handed over


def test_a_scale_keeps_small_objects_where_no_finer_scale_ran(tmp_path):
    """With a blind focus map only the coarsest scale (0.5, range > 100 px) runs. The hand-off rule
    keeps what it sees below its range (the stand-in sees >= 12 tile px = 24 original px) instead of
    dropping it for a finer scale that never looked; without the rule only > 100 px survive."""
    import json

    import cv2
    from test_stitching_oracle import make_dataset

    gt = json.load(open(make_dataset(str(tmp_path), n=2, seed=3)))
    focus = dict(mode="autofocus", focus_thresholds=(0.5,) * 3, focus_dilations=(1,) * 3,
                 focus_min_chip_sizes=(128,) * 3)
    keep = MultiScaleTiledPredictor(BlindFocusOracleModel(), TiledInferenceParams(**PARAMS, **focus))
    plain = MultiScaleTiledPredictor(BlindFocusOracleModel(), TiledInferenceParams(
        **PARAMS, **focus, focus_keep_small_outside_chips=False))
    for entry in gt["images"]:
        image = cv2.imread(str(tmp_path / entry["file_name"]))
        boxes = torch.tensor([a["bbox"] for a in gt["annotations"] if a["image_id"] == entry["id"]], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        sizes = (boxes[:, 2] - boxes[:, 0])
        det_keep, det_plain = keep(image), plain(image)
        assert det_keep["pixels"][:2].tolist() == [0, 0]  # only the coarsest scale ran
        assert torch.equal(_found(det_keep, boxes), sizes >= 2 * SMALLEST_DETECTED)
        assert torch.equal(_found(det_plain, boxes), sizes > 100)
        assert len(det_keep["boxes"]) == int((sizes >= 2 * SMALLEST_DETECTED).sum())  # no duplicates


def test_autofocus_mode_needs_a_focus_model():
    from test_stitching_oracle import OracleModel

    auto = MultiScaleTiledPredictor(OracleModel(), TiledInferenceParams(
        **PARAMS, mode="autofocus", focus_thresholds=(0.5,) * 3, focus_dilations=(1,) * 3,
        focus_min_chip_sizes=(128,) * 3))
    with pytest.raises(ValueError, match="SniperFocusRCNN"):
        auto(np.zeros((100, 100, 3), np.uint8))


def test_autofocus_params_are_checked():
    with pytest.raises(ValueError, match="MODE"):
        TiledInferenceParams(**PARAMS, mode="zoom")
    with pytest.raises(ValueError, match="THRESHOLDS has 1 entries"):
        TiledInferenceParams(**PARAMS, mode="autofocus", focus_thresholds=(0.5,), focus_dilations=(1,) * 3,
                             focus_min_chip_sizes=(128,) * 3)


# ------------------------------------------------------------------------------------------------
# tools/infer.py --draw-focus
# ------------------------------------------------------------------------------------------------
def _register_tool_oracle():
    from detectron2.modeling import META_ARCH_REGISTRY

    if "AutoFocusToolOracle" not in META_ARCH_REGISTRY:
        class AutoFocusToolOracle(FocusOracleModel):
            def __init__(self, cfg):
                super().__init__()
                self.anchor = torch.nn.Parameter(torch.zeros(1))  # something for the checkpoint to hold

        META_ARCH_REGISTRY.register(AutoFocusToolOracle)
    return META_ARCH_REGISTRY.get("AutoFocusToolOracle")


def test_infer_tool_draws_focus_and_reports_pixels_per_scale(tmp_path):
    import json
    import os

    import cv2
    from test_infer_tool import ROOT, load_tool
    from test_stitching_oracle import make_dataset

    oracle = _register_tool_oracle()
    make_dataset(str(tmp_path / "data"), n=1, seed=7)
    torch.save({"model": oracle(None).state_dict()}, tmp_path / "oracle.pth")
    opts = ["MODEL.META_ARCHITECTURE", "AutoFocusToolOracle", "MODEL.WEIGHTS", str(tmp_path / "oracle.pth"),
            "SNIPER.REGISTER_COCO", "()", "SNIPER.TEST.SCALES", "(2.0, 1.0, 0.5)",
            "SNIPER.TEST.VALID_RANGES", "((0, 40), (30, 120), (100, -1))", "SNIPER.TEST.TILE_SIZE", "256",
            "SNIPER.TEST.TILE_OVERLAP", "128", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "SNIPER.TEST.MODE", "autofocus",
            "SNIPER.AUTOFOCUS.THRESHOLDS", "(0.5, 0.5, 0.5)", "SNIPER.AUTOFOCUS.DILATIONS", "(1, 1, 1)",
            "SNIPER.AUTOFOCUS.MIN_CHIP_SIZES", "(128, 128, 128)"]
    out = tmp_path / "out"
    image = str(tmp_path / "data" / "0.png")
    load_tool().main(["--config-file", os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"), "--input", image,
                      "--output", str(out), "--draw-focus"] + opts)
    assert sorted(os.listdir(out)) == ["0.jpg", "0_focus.jpg", "results.json", "results_meta.json"]
    drawn = cv2.imread(str(out / "0_focus.jpg"))
    assert drawn.shape == cv2.imread(image).shape
    pixels = json.load(open(out / "results_meta.json"))["pixels_per_scale"][image]
    full = full_inference_pixels((600, 900), TiledInferenceParams(**PARAMS))
    assert len(pixels) == 3 and pixels[2] == full[2] and 0 < pixels[0] < full[0]
    with pytest.raises(ValueError, match="--draw-focus needs"):
        load_tool().main(["--config-file", os.path.join(ROOT, "configs/sniper_tiny_cpu.yaml"), "--input", image,
                          "--output", str(out), "--draw-focus"] + opts[:-8])
