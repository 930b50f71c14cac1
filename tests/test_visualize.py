"""Drawn detections: labels never overlap, a legend names each class drawn in its colour, class colours
are distinct, tiny objects stay visible, huge scenes are drawn bounded."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sniper_d2 import visualize
from sniper_d2.visualize import DrawStyle, class_colors, draw_detections, place_labels, render_detections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["disk", "square", "triangle"]


def _random_detections(rng, n, h, w):
    xy = rng.uniform(-20, [w, h], (n, 2))
    wh = np.exp(rng.uniform(np.log(1), np.log(max(h, w) / 2), (n, 2)))
    return np.concatenate([xy, xy + wh], 1), rng.uniform(0, 1, n), rng.integers(0, 3, n)


def _drawn_labels(*args, **kwargs):
    """render_detections, recording every label it draws: (text, rect)."""
    drawn = []
    put = visualize._put_label
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(visualize, "_put_label", lambda image, text, rect, color, style: (
            drawn.append((text, rect)), put(image, text, rect, color, style)))
        return render_detections(*args, **kwargs), drawn


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 80), seed=st.integers(0, 10_000), h=st.integers(60, 700), w=st.integers(60, 900))
def test_no_two_drawn_labels_overlap(n, seed, h, w):
    rng = np.random.default_rng(seed)
    boxes, scores, classes = _random_detections(rng, n, h, w)
    image, drawn = _drawn_labels(np.zeros((h, w, 3), np.uint8), boxes, scores, classes, NAMES, 0.3)
    assert image.shape[0] > h and image.shape[1] == w, "legend strip under the image"
    assert len(drawn) <= int((scores >= 0.3).sum())
    r = np.array([rect for _, rect in drawn], np.int64).reshape(-1, 4)
    overlap = ((r[:, None, 0] < r[None, :, 2]) & (r[None, :, 0] < r[:, None, 2])
               & (r[:, None, 1] < r[None, :, 3]) & (r[None, :, 1] < r[:, None, 3]))
    np.fill_diagonal(overlap, False)
    assert not overlap.any(), f"labels {np.argwhere(overlap)[:1].tolist()} overlap"
    assert (r[:, :2] >= 0).all() and (r[:, 2] <= w).all() and (r[:, 3] <= h).all(), "inside the image"
    areas = (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])
    budget = DrawStyle.for_image((h, w)).max_label_cover * h * w
    assert areas[:-1].sum() < budget, "labels stop once they cover their share of the image"


def test_labels_skip_the_score_before_they_skip_the_label():
    style = DrawStyle()
    boxes = [[5, 20, 60, 40]]
    roomy = place_labels(boxes, [("triangle 0.93", "triangle")], (60, 200), style)
    assert [t for _, t, _ in roomy] == ["triangle 0.93"]
    narrow = place_labels(boxes, [("triangle 0.93", "triangle")], (60, 75), style)  # the score does not fit
    assert [t for _, t, _ in narrow] == ["triangle"]
    # Two boxes at one place in a tiny image: the better one is labelled, the other skipped, no overprint.
    crowded = place_labels([[0, 0, 15, 20], [0, 0, 15, 20]], [("a 0.9", "a"), ("b 0.8", "b")], (20, 15), style)
    assert [i for i, _, _ in crowded] == [0]


def test_legend_shows_each_drawn_class_in_its_colour():
    image = np.full((300, 400, 3), 128, np.uint8)
    boxes = np.array([[10, 10, 60, 60], [100, 100, 150, 170], [200, 50, 260, 90], [300, 200, 340, 260]], float)
    scores, classes = np.array([0.9, 0.8, 0.7, 0.2]), np.array([0, 2, 0, 1])
    drawn = render_detections(image, boxes, scores, classes, NAMES, threshold=0.5)
    strip = drawn[300:]
    colors = class_colors(3)
    for c in (0, 2):
        assert (strip == colors[c]).all(-1).sum() > 20, f"{NAMES[c]}'s swatch is in the legend"
    assert not (strip == colors[1]).all(-1).any(), "square has no detection above the threshold: not listed"
    assert np.abs(strip.astype(int) - 255).max(-1).astype(bool).mean() > 0.02, "legend text drawn"
    for c in (0, 2):  # each box is outlined in its class colour
        x0, y0 = boxes[classes == c][0, :2].astype(int)
        assert (drawn[y0:y0 + 40, x0 - 1:x0 + 2] == colors[c]).all(-1).any()


def test_empty_legend_says_there_is_nothing():
    drawn = render_detections(np.zeros((100, 200, 3), np.uint8), np.zeros((0, 4)), [], [], NAMES, 0.5)
    assert drawn.shape[0] > 100 and (drawn[100:] < 128).any(), "a legend line saying 'no detections'"


def test_class_colours_are_distinct():
    colors = np.array(class_colors(40), float)
    assert len({tuple(c) for c in colors}) == 40
    d = np.sqrt(((colors[:, None] - colors[None]) ** 2).sum(-1)) + np.eye(40) * 1e9
    assert d[:10, :10].min() > 60, "the fixed palette's colours are far apart"
    assert class_colors(3) == class_colors(12)[:3], "a class keeps its colour whatever the number of classes"


def test_tiny_objects_stay_visible():
    image = np.zeros((400, 400, 3), np.uint8)
    style = DrawStyle.for_image(image.shape[:2])
    drawn = render_detections(image, [[200, 200, 201.5, 201]], [0.9], [1], NAMES, 0.5)
    box_top = int(round(200.75 - style.min_box_px / 2))
    near = drawn[box_top:box_top + 20, 185:215]  # the label is above the box: look below its bottom edge only
    ys, xs = np.nonzero((near == class_colors(3)[1]).all(-1))
    assert xs.max() - xs.min() >= style.min_box_px - 1 and ys.max() - ys.min() >= style.min_box_px - 1
    assert abs((xs.max() + xs.min()) / 2 + 185 - 200.75) <= 1.5, "drawn around the object's centre"


def test_style_grows_with_the_drawn_image():
    small, large = DrawStyle.for_image((600, 800)), DrawStyle.for_image((4096, 3000))
    assert large.line_px > small.line_px and large.font_scale > small.font_scale
    assert large.min_box_px >= small.min_box_px


def test_drawn_images_of_huge_scenes_are_bounded_and_boxes_follow(tmp_path):
    from PIL import Image

    path = str(tmp_path / "wide.jpg")
    Image.fromarray(np.full((800, 2400, 3), 40, np.uint8)).save(path)
    det = {"boxes": np.array([[400.0, 200.0, 800.0, 600.0]]), "scores": np.array([0.9]), "classes": np.array([0])}
    drawn = draw_detections(path, det, ["thing"], 0.5, max_side=1000)
    assert drawn.shape[1] == 1000 and drawn.shape[0] > 1000 * 800 / 2400  # long side max_side, legend under it
    box_pixels = (drawn[:333] == class_colors(1)[0]).all(-1)
    ys, xs = np.nonzero(box_pixels)
    # The box 400..800 x 200..600 at 1000 / 2400 (x 167..333, y 83..250), its label just above it.
    assert 165 <= xs.min() and xs.max() <= 335 and 83 - 40 <= ys.min() and ys.max() <= 252
    assert box_pixels[83:250, 165:169].sum() > 100, "the left edge is drawn where the box is"


@pytest.mark.parametrize("module", ["sniper_d2.visualize"])
def test_drawing_imports_no_torch(module):
    code = f"import sys, {module}; bad = [m for m in ('torch', 'detectron2') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
