"""Tiling and the stitching predictor: windows, the inner-border rule, the map back to original pixels,
scale ranges and batching."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from hypothesis import given, settings, strategies as st

from sniper_d2.geometry import tile_windows, touches_inner_border
from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams

# --- windows -------------------------------------------------------------------------------------

sizes = st.integers(1, 1500)
tiles = st.tuples(st.integers(16, 600), st.floats(0.0, 0.9)).map(lambda t: (t[0], int(t[0] * t[1])))


@settings(max_examples=80, deadline=None)
@given(h=sizes, w=sizes, tile=tiles)
def test_windows_lie_inside_the_image_are_full_size_and_cover_it(h, w, tile):
    tile_size, overlap = tile
    win = tile_windows((h, w), tile_size, overlap)
    assert (win[:, :2] >= 0).all() and (win[:, 2] <= w).all() and (win[:, 3] <= h).all()
    np.testing.assert_array_equal(win[:, 2] - win[:, 0], min(tile_size, w))
    np.testing.assert_array_equal(win[:, 3] - win[:, 1], min(tile_size, h))
    covered = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in win:
        covered[y0:y1, x0:x1] = True
    assert covered.all()


@settings(max_examples=80, deadline=None)
@given(extent=sizes, tile=tiles, box=st.tuples(st.floats(0, 1), st.floats(0, 1)))
def test_every_object_no_larger_than_the_overlap_lies_whole_in_some_window(extent, tile, box):
    """What the border rule relies on: dropping cut boxes loses nothing up to the overlap size."""
    tile_size, overlap = tile
    side = box[1] * min(overlap, extent)
    start = box[0] * (extent - side)
    win = tile_windows((1, extent), tile_size, overlap)
    assert ((win[:, 0] <= start) & (start + side <= win[:, 2])).any()


def test_an_image_smaller_than_a_tile_is_one_window_the_whole_image():
    np.testing.assert_array_equal(tile_windows((100, 300), 512, 128), [[0, 0, 300, 100]])


def test_last_window_is_shifted_inward_to_end_at_the_border():
    np.testing.assert_array_equal(tile_windows((10, 1000), 400, 100)[:, 0], [0, 300, 600])
    np.testing.assert_array_equal(tile_windows((10, 1000), 400, 100)[:, 2], [400, 700, 1000])


def test_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ValueError, match="overlap"):
        tile_windows((1000, 1000), 256, 256)


# --- the inner-border rule ---------------------------------------------------------------------------


def test_only_inner_sides_count_as_touching():
    boxes = np.array([[0, 40, 10, 50], [40, 0, 50, 10], [90, 40, 100, 50], [40, 90, 50, 100], [30, 30, 60, 60]],
                     np.float32)  # touching left, top, right, bottom; inside
    np.testing.assert_array_equal(touches_inner_border(boxes, (100, 100), (True, True, True, True)),
                                  [True, True, True, True, False])
    np.testing.assert_array_equal(touches_inner_border(boxes, (100, 100), (False, True, False, False)),
                                  [False, True, False, False, False])
    np.testing.assert_array_equal(touches_inner_border(boxes, (100, 100), (False,) * 4), [False] * 5)


def test_border_rule_gives_the_same_answer_on_numpy_and_torch():
    boxes = np.random.default_rng(0).uniform(0, 100, (50, 4)).astype(np.float32)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    sides = (True, False, True, True)
    np.testing.assert_array_equal(touches_inner_border(torch.as_tensor(boxes), (100, 90), sides).numpy(),
                                  touches_inner_border(boxes, (100, 90), sides))


# --- the predictor -----------------------------------------------------------------------------------


def painted(h, w, boxes):
    """Black BGR image with white filled rectangles (XYXY, integer original pixels)."""
    image = np.zeros((h, w, 3), np.uint8)
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = 255
    return image


class BlobModel:
    """Stand-in detector: the bounding box of every white blob in each tile, score 1, class 0.
    Records every call's inputs so tests can inspect what the model saw."""

    def __init__(self):
        self.calls = []

    def __call__(self, inputs):
        import cv2

        self.calls.append([(tuple(x["image"].shape), x["height"], x["width"]) for x in inputs])
        outputs = []
        for x in inputs:
            tile = x["image"].permute(1, 2, 0).numpy()
            n, _, stats, _ = cv2.connectedComponentsWithStats((tile[..., 0] >= 128).astype(np.uint8), connectivity=4)
            boxes = np.array([[s[0], s[1], s[0] + s[2], s[1] + s[3]] for s in stats[1:]], np.float32).reshape(-1, 4)
            inst = Instances((x["height"], x["width"]))
            inst.pred_boxes = Boxes(torch.as_tensor(boxes))
            inst.scores = torch.ones(len(boxes))
            inst.pred_classes = torch.zeros(len(boxes), dtype=torch.long)
            outputs.append({"instances": inst})
        return outputs


ONE_SCALE = TiledInferenceParams(scales=(1.0,), valid_ranges=((0.0, -1.0),), tile_size=128, tile_overlap=64,
                                 tile_batch_size=4, score_thresh=0.0)


@pytest.mark.parametrize("scale", [2.0, 1.0, 0.5, -1.0])
def test_boxes_come_back_in_original_pixels_at_every_scale(scale):
    gt = np.array([[20, 30, 52, 62], [200, 100, 240, 180], [300, 40, 316, 56]])
    params = replace(ONE_SCALE, scales=(scale,), tile_size=256, tile_overlap=192, fit_size=200)
    det = MultiScaleTiledPredictor(BlobModel(), params)(painted(220, 360, gt))
    boxes = det["boxes"].numpy()[np.argsort(det["boxes"][:, 0].numpy())]
    np.testing.assert_allclose(boxes, gt, atol=2.0 / min(scale if scale > 0 else 200 / 360, 1.0))


def test_an_object_cut_by_tile_borders_is_found_once_and_whole():
    gt = np.array([[100, 100, 150, 150]])  # crosses the borders of the 128 px tiles at 128
    predictor = MultiScaleTiledPredictor(BlobModel(), ONE_SCALE)
    det = predictor(painted(300, 300, gt))
    np.testing.assert_allclose(det["boxes"].numpy(), gt, atol=1e-4)
    without = MultiScaleTiledPredictor(BlobModel(), replace(ONE_SCALE, use_border_rule=False, merge_iou=0.9))
    assert len(without(painted(300, 300, gt))["boxes"]) > 1, "cut pieces survive without the rule"


def test_objects_touching_the_image_border_are_kept():
    gt = np.array([[0, 0, 40, 30], [260, 270, 300, 300]])
    det = MultiScaleTiledPredictor(BlobModel(), ONE_SCALE)(painted(300, 300, gt))
    np.testing.assert_allclose(np.sort(det["boxes"].numpy(), axis=0), np.sort(gt, axis=0), atol=1e-4)


def test_each_scale_keeps_only_its_range():
    """A 20 px and a 60 px object; scale 2 keeps (0, 40], scale 0.5 keeps (40, inf]: each is found once,
    at its own scale (the other scale's copy would be filtered)."""
    gt = np.array([[40, 40, 60, 60], [150, 40, 210, 100]])
    params = replace(ONE_SCALE, scales=(2.0, 0.5), valid_ranges=((0.0, 40.0), (40.0, -1.0)), tile_size=512,
                     tile_overlap=128, merge_iou=0.99)
    det = MultiScaleTiledPredictor(BlobModel(), params)(painted(160, 260, gt))
    assert len(det["boxes"]) == 2
    only_fine = MultiScaleTiledPredictor(BlobModel(), replace(params, valid_ranges=((0.0, 40.0), (1e6, -1.0))))
    np.testing.assert_allclose(only_fine(painted(160, 260, gt))["boxes"].numpy(), gt[:1], atol=1.0)


def test_range_bounds_are_lo_exclusive_hi_inclusive():
    gt = np.array([[10, 10, 42, 42]])  # sqrt(w*h) = 32
    image = painted(100, 100, gt)
    found = [len(MultiScaleTiledPredictor(BlobModel(), replace(ONE_SCALE, valid_ranges=(r,)))(image)["boxes"])
             for r in ((0.0, 32.0), (32.0, -1.0), (31.0, 33.0))]
    assert found == [1, 0, 1]


def test_batching_changes_nothing_but_the_number_of_calls():
    rng = np.random.default_rng(3)
    xy = rng.integers(0, 440, (12, 2))
    gt = np.concatenate([xy, xy + rng.integers(6, 50, (12, 2))], axis=1)
    image = painted(500, 500, gt)
    params = replace(ONE_SCALE, scales=(1.0, 0.5), valid_ranges=((0.0, -1.0), (0.0, -1.0)))
    results, models = [], []
    for batch in (1, 3, 100):
        models.append(BlobModel())
        results.append(MultiScaleTiledPredictor(models[-1], replace(params, tile_batch_size=batch))(image))
    for r in results[1:]:
        for key in ("boxes", "scores", "classes"):
            torch.testing.assert_close(r[key], results[0][key])
    n_tiles = sum(len(c) for c in models[0].calls)
    assert [len(m.calls) for m in models] == [n_tiles, -(-n_tiles // 3), 1]


def test_the_model_gets_tiles_no_larger_than_tile_size_with_their_own_size_as_height_width():
    model = BlobModel()
    MultiScaleTiledPredictor(model, replace(ONE_SCALE, scales=(3.0,)))(painted(200, 150, []))
    for shape, h, w in (x for call in model.calls for x in call):
        assert shape[0] == 3 and (h, w) == shape[1:] and h <= 128 and w <= 128


def test_top_k_and_score_threshold_apply():
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 260, (30, 2)) // 20 * 20
    gt = np.unique(np.concatenate([xy, xy + 10], axis=1), axis=0)
    det = MultiScaleTiledPredictor(BlobModel(), replace(ONE_SCALE, max_detections=5))(painted(300, 300, gt))
    assert len(det["boxes"]) == 5
    det = MultiScaleTiledPredictor(BlobModel(), replace(ONE_SCALE, score_thresh=1.01))(painted(300, 300, gt))
    assert len(det["boxes"]) == 0 and det["boxes"].shape == (0, 4)


def test_bad_settings_and_images_are_refused():
    with pytest.raises(ValueError, match="TILE_OVERLAP"):
        replace(ONE_SCALE, tile_overlap=128)
    with pytest.raises(ValueError, match="VALID_RANGES"):
        replace(ONE_SCALE, scales=(1.0, 2.0))
    with pytest.raises(ValueError, match="MERGE_METHOD"):
        replace(ONE_SCALE, merge_method="wbf")
    with pytest.raises(ValueError, match="uint8"):
        MultiScaleTiledPredictor(BlobModel(), ONE_SCALE)(np.zeros((10, 10, 3), np.float32))
