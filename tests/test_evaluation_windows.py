"""Windowed COCO evaluation of huge images: the same numbers as plain COCOeval when no matching pair
straddles a window border, close to them on random scenes, and each box in the window of its centre."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sniper_d2.evaluation_windows import (cut_fraction, evaluate_coco, images_to_window, split_into_windows,
                                          window_grid, window_index)


def scene(rng, size, n_objects, box_px, window_px=None, margin=0.0, classes=3):
    """(gt annotations, results) of one image of ``size`` (h, w): objects of ``box_px`` (lo, hi) px;
    each found by a jittered detection (90%), plus false positives. With ``window_px``, every box is
    kept ``margin`` px inside one window (no pair straddles a border)."""
    h, w = size
    wh = rng.uniform(*box_px, size=(n_objects, 2))
    if window_px:
        rows, cols = window_grid(size, window_px)
        cell = rng.integers(0, rows * cols, n_objects)
        lo = np.stack([cell % cols, cell // cols], 1) * window_px + margin
        hi = np.minimum(lo - 2 * margin + window_px, [w, h]) - wh - margin
        xy = lo + rng.uniform(0, 1, (n_objects, 2)) * np.maximum(hi - lo, 0)
    else:
        xy = rng.uniform(0, 1, (n_objects, 2)) * ([w, h] - wh)
    gt_boxes = np.concatenate([xy, wh], 1)
    cls = rng.integers(1, classes + 1, n_objects)
    found = rng.uniform(size=n_objects) < 0.9
    jitter = rng.normal(0, 0.08, (n_objects, 4)) * np.repeat(wh, 2, axis=1)
    if window_px:
        jitter = np.clip(jitter, -margin / 2, margin / 2)
    det_boxes = (gt_boxes + jitter)[found]
    det_cls = cls[found]
    n_fp = n_objects // 5
    fp = rng.uniform(0, 1, (n_fp, 2)) * (np.array([w, h]) - 60)
    fp_boxes = np.concatenate([fp, rng.uniform(*box_px, size=(n_fp, 2))], 1)
    if window_px:  # false positives inside a window too
        fp_boxes[:, :2] = np.floor(fp / window_px) * window_px + margin
        fp_boxes[:, 2:] = np.minimum(fp_boxes[:, 2:], window_px - 2 * margin)
    det_boxes = np.concatenate([det_boxes, fp_boxes])
    det_cls = np.concatenate([det_cls, rng.integers(1, classes + 1, n_fp)])
    anns = [{"bbox": b.tolist(), "category_id": int(c), "area": float(b[2] * b[3]), "iscrowd": 0}
            for b, c in zip(gt_boxes, cls)]
    results = [{"bbox": b.tolist(), "category_id": int(c), "score": float(s)}
               for b, c, s in zip(det_boxes, det_cls, rng.uniform(size=len(det_boxes)))]
    return anns, results


def coco(images, classes=3):
    """COCO json + results from [(image size, annotations, results)], image ids 1.."""
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": str(c)} for c in range(1, classes + 1)]}
    results = []
    for image_id, (size, anns, res) in enumerate(images, start=1):
        gt["images"].append({"id": image_id, "height": size[0], "width": size[1], "file_name": f"{image_id}.png"})
        gt["annotations"] += [dict(a, image_id=image_id, id=len(gt["annotations"]) + k + 1) for k, a in enumerate(anns)]
        results += [dict(r, image_id=image_id) for r in res]
    return gt, results


@given(st.lists(st.tuples(st.floats(-50, 1100), st.floats(-50, 900), st.floats(0, 300), st.floats(0, 300)),
                max_size=30), st.integers(16, 400))
@settings(max_examples=60, deadline=None)
def test_each_box_goes_to_the_window_holding_its_centre(boxes, window_px):
    size = (850, 1030)
    index = window_index(np.array(boxes).reshape(-1, 4), size, window_px)
    rows, cols = window_grid(size, window_px)
    assert rows * window_px >= size[0] > (rows - 1) * window_px and cols * window_px >= size[1]
    for (x, y, w, h), k in zip(boxes, index):
        r, c = divmod(int(k), cols)
        cx, cy = x + w / 2, y + h / 2
        assert 0 <= r < rows and 0 <= c < cols
        assert c == min(max(int(np.floor(cx / window_px)), 0), cols - 1)
        assert r == min(max(int(np.floor(cy / window_px)), 0), rows - 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_windowed_equals_plain_coco_when_no_pair_straddles_a_border(seed):
    rng = np.random.default_rng(seed)
    huge = ((1000, 1400), *scene(rng, (1000, 1400), 600, (8, 60), window_px=250, margin=12))
    small = ((300, 400), *scene(rng, (300, 400), 40, (10, 80)))  # an ordinary image next to it
    gt, results = coco([huge, small])
    plain = evaluate_coco(gt, results, max_dets=(1, 10, 1000))
    windowed = evaluate_coco(gt, results, window_size_px=250, windowed_image_ids=[1], max_dets=(1, 10, 1000))
    assert plain.stats[0] > 0.2 and plain.stats[1] > 0.6  # a scene with both matches and misses
    same = [0, 1, 2, 3, 4, 5, 8, 9, 10, 11]  # all but AR@1 and AR@10, which count per window
    np.testing.assert_allclose(windowed.stats[same], plain.stats[same], rtol=0, atol=1e-12)
    np.testing.assert_allclose(windowed.eval["precision"][..., -1], plain.eval["precision"][..., -1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_windowed_is_close_to_plain_coco_on_random_scenes(seed):
    """Stated tolerance: AP and AP50 move by less than the share of objects a border crosses
    (cut_fraction; only those can lose a match, see sniper_d2.evaluation_windows)."""
    rng = np.random.default_rng(seed)
    gt, results = coco([((1536, 1536), *scene(rng, (1536, 1536), 700, (8, 40)))])
    plain = evaluate_coco(gt, results, max_dets=(1, 10, 3000))
    windowed = evaluate_coco(gt, results, window_size_px=384, windowed_image_ids=[1], max_dets=(1, 10, 3000))
    cut = cut_fraction([a["bbox"] for a in gt["annotations"]], 384)
    assert 0.03 < cut < 0.2  # boxes of 8-40 px in 384 px windows
    assert abs(windowed.stats[0] - plain.stats[0]) < cut and abs(windowed.stats[1] - plain.stats[1]) < cut


def test_windows_keep_boxes_and_other_images():
    rng = np.random.default_rng(3)
    gt, results = coco([((600, 500), *scene(rng, (600, 500), 50, (10, 30))), ((100, 100), [], [])])
    wgt, wres, windows = split_into_windows(gt, results, 256, [1])
    assert len(windows) == 3 * 2 and min(windows) == 3  # after every existing id
    assert sorted(im["id"] for im in wgt["images"]) == [2, 3, 4, 5, 6, 7, 8]
    assert [a["bbox"] for a in wgt["annotations"]] == [a["bbox"] for a in gt["annotations"]]
    assert [r["score"] for r in wres] == [r["score"] for r in results]
    for item in wgt["annotations"] + wres:
        original, r, c = windows[item["image_id"]]
        x, y, w, h = item["bbox"]
        assert original == 1
        assert c == min(int((x + w / 2) // 256), 1) and r == min(int((y + h / 2) // 256), 2)


def test_images_to_window_by_pixels_and_by_objects():
    gt, _ = coco([((100, 100), [{"bbox": [0, 0, 5, 5], "category_id": 1, "area": 25, "iscrowd": 0}] * 3, []),
                  ((2000, 3000), [], []), ((50, 50), [], [])])
    assert images_to_window(gt, min_pixels=1_000_000, min_objects=0) == [2]
    assert images_to_window(gt, min_pixels=1_000_000, min_objects=3) == [1, 2]
    assert images_to_window(gt, min_pixels=0, min_objects=0) == []


def test_cut_fraction_counts_boxes_crossing_a_border():
    boxes = [[10, 10, 20, 20], [90, 10, 20, 20], [10, 90, 20, 20], [80, 80, 20, 20]]  # the last ends on 100
    assert cut_fraction(boxes, 100) == 0.5


def test_coco_stats_equal_pycocotools_summary_with_its_default_max_dets():
    rng = np.random.default_rng(5)
    gt, results = coco([((400, 400), *scene(rng, (400, 400), 60, (10, 90)))])
    coco_eval = evaluate_coco(gt, results)
    ours = coco_eval.stats.copy()
    coco_eval.summarize()  # pycocotools' own numbers (maxDets 1, 10, 100)
    np.testing.assert_allclose(ours, coco_eval.stats, rtol=0, atol=1e-12)


def test_the_module_imports_numpy_only():
    import os
    import subprocess
    import sys

    code = ("import sys, sniper_d2.evaluation_windows; "
            "bad = [m for m in ('torch', 'detectron2', 'pycocotools') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
