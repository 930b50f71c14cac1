"""The synthetic data set: multi-scale objects, distractors, empty images, determinism."""

import json

import numpy as np

from sniper_d2.coco import load_coco_records
from sniper_d2.synthetic import SyntheticSpec, make_synthetic_dataset, render_image

SMALL = SyntheticSpec(num_images=6, min_side_px=600, max_side_px=900, max_object_px=250.0,
                      empty_fraction=0.34, seed=3)


def _sizes(boxes):
    return np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def test_render_is_deterministic_by_seed_and_index():
    a = render_image(SMALL, 1)
    b = render_image(SMALL, 1)
    c = render_image(SMALL, 2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])


def test_default_images_span_at_least_30x_in_object_size():
    spec = SyntheticSpec(num_images=5)
    for i in range(spec.num_images):
        image, boxes, cats, distractors = render_image(spec, i)
        assert 1000 <= min(image.shape[:2]) and max(image.shape[:2]) <= 2000
        if len(boxes) == 0:
            continue
        sizes = _sizes(boxes)
        assert sizes.min() < 12.5 and sizes.max() > 300
        assert sizes.max() / sizes.min() >= 30
        assert set(cats.tolist()) <= {1, 2, 3}


def test_boxes_are_inside_image_and_distractors_do_not_overlap_objects():
    for i in range(SMALL.num_images):
        image, boxes, _, distractors = render_image(SMALL, i)
        h, w = image.shape[:2]
        for arr in (boxes, distractors):
            assert (arr[:, 0] >= 0).all() and (arr[:, 2] <= w).all()
            assert (arr[:, 1] >= 0).all() and (arr[:, 3] <= h).all()
        if len(boxes) and len(distractors):
            ix = np.minimum(boxes[:, None, 2], distractors[None, :, 2]) - np.maximum(boxes[:, None, 0], distractors[None, :, 0])
            iy = np.minimum(boxes[:, None, 3], distractors[None, :, 3]) - np.maximum(boxes[:, None, 1], distractors[None, :, 1])
            assert not ((ix > 0) & (iy > 0)).any()


def test_objects_are_drawn_where_the_boxes_say():
    image, boxes, _, _ = render_image(SMALL, 0)
    big = boxes[np.argmax(_sizes(boxes))]
    x0, y0, x1, y1 = big.astype(int)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    # The centre of a shape is one flat colour; the background is noisy.
    patch = image[cy - 2:cy + 3, cx - 2:cx + 3].reshape(-1, 3).astype(int)
    assert np.ptp(patch, axis=0).max() <= 2


def test_written_split_round_trips_through_coco_loader(tmp_path):
    path = make_synthetic_dataset(str(tmp_path), "train", SMALL, progress=False)
    records, categories = load_coco_records(path)
    assert [c["name"] for c in categories] == ["disk", "square", "triangle"]
    assert len(records) == SMALL.num_images
    assert any(len(r["boxes"]) == 0 for r in records), "some images must have no objects"
    assert all(len(r["distractors"]) > 0 for r in records)
    for i, rec in enumerate(records):
        _, boxes, cats, _ = render_image(SMALL, i)
        np.testing.assert_allclose(rec["boxes"], boxes, atol=0.01)
        np.testing.assert_array_equal(rec["category_ids"], cats)
    # Same spec: reused, not rewritten.
    before = (tmp_path / "train.json").stat().st_mtime_ns
    make_synthetic_dataset(str(tmp_path), "train", SMALL, progress=False)
    assert (tmp_path / "train.json").stat().st_mtime_ns == before
    assert json.loads((tmp_path / "train.json").read_text())["info"]["spec_hash"]
