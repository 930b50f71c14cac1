"""SniperDatasetMapper: exact pixels and exact box coordinates at the planned scale."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sniper_d2.data.mapper import SniperDatasetMapper

H, W = 300, 400


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A noisy image (lossless PNG) with three flat rectangles at known places."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 120, (H, W, 3), dtype=np.uint8)
    boxes = np.array([[40, 40, 104, 88], [200, 120, 264, 200], [300, 220, 396, 296]], np.float32)
    colors = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    for (x0, y0, x1, y1), c in zip(boxes.astype(int), colors):
        img[y0:y1, x0:x1] = c
    path = tmp_path_factory.mktemp("mapper") / "src.png"
    Image.fromarray(img).save(path)
    return str(path), img, boxes


def _dict(path, boxes, chip, scale, valid_range=(0, float("inf")), crowd=()):
    return {"file_name": path, "image_id": 7, "height": H, "width": W,
            "annotations": [{"bbox": b.tolist(), "bbox_mode": 0, "category_id": k, "iscrowd": int(k in crowd)}
                            for k, b in enumerate(boxes)],
            "chip": list(chip), "scale": scale, "valid_range": list(valid_range), "is_negative": False}


def _mapper(chip_size=160, flip=False):
    return SniperDatasetMapper(chip_size=chip_size, image_format="RGB", horizontal_flip=flip)


def _independent(img, chip, scale):
    """Crop at whole pixels, resize with torch (bilinear up, area down): a second implementation."""
    x0, y0, x1, y1 = int(np.floor(chip[0])), int(np.floor(chip[1])), int(np.ceil(chip[2])), int(np.ceil(chip[3]))
    crop = torch.as_tensor(img[y0:y1, x0:x1]).permute(2, 0, 1)[None].float()
    size = (int(round((y1 - y0) * scale)), int(round((x1 - x0) * scale)))
    mode = {"mode": "bilinear", "align_corners": False} if scale >= 1 else {"mode": "area"}
    return F.interpolate(crop, size=size, **mode)[0].permute(1, 2, 0).round().numpy(), (x0, y0)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_pixels_match_an_independent_crop_and_resize(source, seed, scale):
    path, img, boxes = source
    rng = np.random.default_rng(seed)
    side = 160 / scale
    x0 = int(rng.integers(0, max(1, W - side)))
    y0 = int(rng.integers(0, max(1, H - side)))
    chip = (x0, y0, min(W, x0 + side), min(H, y0 + side))
    out = _mapper()(_dict(path, boxes, chip, scale))
    expected, _ = _independent(img, chip, scale)
    h, w = expected.shape[:2]
    got = out["image"].permute(1, 2, 0).numpy().astype(np.float64)
    inner = (slice(1, h - 1), slice(1, w - 1))  # interpolation at the crop edge may differ by convention
    diff = np.abs(got[:h, :w][inner] - expected[inner])
    if scale == 1.0:
        assert diff.max() == 0
    else:
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 2
    assert (got[h:, :] == 0).all() and (got[:, w:] == 0).all(), "padding must be zeros"


def test_boxes_land_exactly_on_their_objects(source):
    path, img, boxes = source
    chip, scale = (180, 100, 300, 220), 1.333
    out = _mapper(chip_size=160)(_dict(path, boxes, chip, scale))
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [1]  # box 2 starts at the chip edge: not in this chip
    expected = (boxes[1] - [180, 100, 180, 100]) * scale  # x_chip = (x - x0) * scale, exactly
    np.testing.assert_allclose(inst.gt_boxes.tensor[0].numpy(), expected, atol=1e-4)
    x0, y0, x1, y1 = np.round(expected).astype(int)
    image = out["image"].permute(1, 2, 0).numpy()
    assert (image[y0 + 2:y1 - 2, x0 + 2:x1 - 2] == [0, 250, 0]).all(), "the box must cover the green object"
    assert not (image[y0 - 3, x0:x1] == [0, 250, 0]).all(axis=1).any(), "and not beyond it"


def test_valid_flags_follow_size_range_truncation_and_crowd(source):
    path, _, boxes = source
    # Box 0 (64x48: sqrt ~55) fully inside; box 1 (64x80: ~72) cut to 25% visible; box 2 crowd.
    chip = (0, 0, 216, 300)
    out = _mapper(chip_size=400)(_dict(path, boxes, chip, 1.0, valid_range=(50, 100), crowd=(2,)))
    assert out["instances"].gt_classes.tolist() == [0, 1]
    assert out["instances"].gt_valid.tolist() == [True, False]
    out = _mapper(chip_size=400)(_dict(path, boxes, chip, 1.0, valid_range=(60, 100)))
    assert out["instances"].gt_valid.tolist() == [False, False], "box 0 is below the valid range"
    out = _mapper(chip_size=400)(_dict(path, boxes, (0, 0, 400, 300), 1.0, valid_range=(0, 1e9), crowd=(2,)))
    assert out["instances"].gt_valid.tolist() == [True, True, False], "crowd boxes are ignore regions"


def test_flip_moves_boxes_with_pixels(source, monkeypatch):
    path, _, boxes = source
    monkeypatch.setattr(np.random, "rand", lambda: 0.0)  # always flip
    chip = (0, 0, 160, 160)
    flipped = _mapper(flip=True)(_dict(path, boxes, chip, 1.0))
    plain = _mapper(flip=False)(_dict(path, boxes, chip, 1.0))
    np.testing.assert_array_equal(flipped["image"].numpy(), plain["image"].flip(-1).numpy())
    b = plain["instances"].gt_boxes.tensor[0]
    np.testing.assert_allclose(flipped["instances"].gt_boxes.tensor[0].numpy(), [160 - b[2], b[1], 160 - b[0], b[3]])


def test_negative_chip_without_objects_gives_empty_instances(source):
    path, _, boxes = source
    out = _mapper()(_dict(path, boxes, (120, 0, 200, 80), 2.0))
    assert len(out["instances"]) == 0 and out["image"].shape == (3, 160, 160)
