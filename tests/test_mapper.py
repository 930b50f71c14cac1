"""SniperDatasetMapper: the output is the exact affine map x_chip = (x - x0) * scale of the source.

Pixels are checked against independent numpy resamplers (bilinear point sampling when enlarging,
exact area integration when shrinking), boxes against the formula, for random fractional chips.
"""

import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sniper_d2.image_io import ImageReadError
from sniper_d2.data.mapper import SniperDatasetMapper

H, W = 240, 320
BOXES = np.array([[40, 40, 104, 88], [200, 120, 264, 200], [250, 20, 300, 60], [10, 150, 90, 230]], np.float64)
COLORS = np.array([(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)], np.uint8)


def _background(h, w, seed=0):
    """Smooth texture plus mild noise (area-vs-bilinear conventions differ little on it)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([100 + 60 * np.sin(x / 9.0 + y / 23.0), 100 + 60 * np.cos(y / 11.0),
                     100 + 50 * np.sin((x - y) / 15.0)], axis=2)
    noise = np.random.default_rng(seed).normal(0, 3, base.shape)
    return np.clip(base + noise, 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """(path, (H, W, 3) uint8 RGB image): a lossless PNG with flat coloured objects at BOXES."""
    img = _background(H, W)
    for (x0, y0, x1, y1), c in zip(BOXES.astype(int), COLORS):
        img[y0:y1, x0:x1] = c
    path = tmp_path_factory.mktemp("mapper") / "src.png"
    Image.fromarray(img).save(path)
    return str(path), img


def _dict(path, chip, scale, boxes=BOXES, valid_range=(0, math.inf), crowd=(), h=H, w=W, classes=None):
    classes = list(range(len(boxes))) if classes is None else classes
    return {"file_name": str(path), "image_id": 7, "height": h, "width": w,
            "annotations": [{"bbox": list(map(float, b)), "bbox_mode": 0, "category_id": int(k),
                             "iscrowd": int(i in crowd)} for i, (b, k) in enumerate(zip(boxes, classes))],
            "chip": [float(v) for v in chip], "scale": float(scale), "valid_range": list(valid_range),
            "is_negative": False}


def _mapper(chip_size=128, flip=False, **kwargs):
    return SniperDatasetMapper(chip_size=chip_size, image_format="RGB", horizontal_flip=flip, **kwargs)


def _always_flipping(mapper, d):
    state = np.random.get_state()
    real_rand = np.random.rand
    np.random.rand = lambda: 0.0
    try:
        return mapper(d)
    finally:
        np.random.rand = real_rand
        np.random.set_state(state)


def _hwc(out):
    return out["image"].permute(1, 2, 0).numpy()


# --- independent references --------------------------------------------------------------------------

def _bilinear_reference(img, x0, y0, scale, out_h, out_w):
    """Sample the bilinear interpolant of pixel centres at each output pixel centre (edges clamped)."""
    def axis(n_out, origin, n_src):
        c = (np.arange(n_out) + 0.5) / scale + origin - 0.5
        c = np.clip(c, 0, n_src - 1)
        lo = np.minimum(np.floor(c).astype(int), n_src - 2)
        return lo, c - lo
    ly, fy = axis(out_h, y0, img.shape[0])
    lx, fx = axis(out_w, x0, img.shape[1])
    a = img.astype(np.float64)
    top = a[ly][:, lx] * (1 - fx)[None, :, None] + a[ly][:, lx + 1] * fx[None, :, None]
    bottom = a[ly + 1][:, lx] * (1 - fx)[None, :, None] + a[ly + 1][:, lx + 1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def _area_reference(img, x0, y0, scale, out_h, out_w):
    """Exact mean of the source (pixels as unit squares) over each output pixel's footprint."""
    def weights(n_out, origin, n_src):
        lo = origin + np.arange(n_out)[:, None] / scale
        hi = np.minimum(lo + 1 / scale, n_src)  # the footprint clipped to the image
        j = np.arange(n_src)[None, :]
        overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)
        return overlap / overlap.sum(axis=1, keepdims=True)
    wy, wx = weights(out_h, y0, img.shape[0]), weights(out_w, x0, img.shape[1])
    rows = np.tensordot(wy, img.astype(np.float64), axes=(1, 0))  # (out_h, W, C)
    return np.tensordot(rows, wx, axes=(1, 1)).transpose(0, 2, 1)  # (out_h, out_w, C)


def _random_chip(rng, scale, chip_size):
    side = chip_size / scale
    x0 = rng.uniform(0, max(0.0, W - side))
    y0 = rng.uniform(0, max(0.0, H - side))
    return (x0, y0, x0 + side, y0 + side)


# --- pixels ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale", [1.7, 2.0, 3.0])
def test_enlarged_chip_pixels_equal_bilinear_sampling_at_the_exact_map(source, seed, scale):
    path, img = source
    chip = _random_chip(np.random.default_rng(seed), scale, 128)
    got = _hwc(_mapper()(_dict(path, chip, scale))).astype(np.float64)
    out_h = min(128, round((min(chip[3], H) - chip[1]) * scale))
    out_w = min(128, round((min(chip[2], W) - chip[0]) * scale))
    expected = _bilinear_reference(img, chip[0], chip[1], scale, out_h, out_w)
    assert np.abs(got[:out_h, :out_w] - expected).max() <= 1.0  # OpenCV's fixed-point weights


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("scale", [0.5, 0.37, 0.8])
def test_shrunk_chip_pixels_equal_area_averaging_at_the_exact_map(source, seed, scale):
    path, img = source
    chip = _random_chip(np.random.default_rng(seed), scale, 96)
    got = _hwc(_mapper(chip_size=96)(_dict(path, chip, scale))).astype(np.float64)
    out_h = min(96, round((min(chip[3], H) - chip[1]) * scale))
    out_w = min(96, round((min(chip[2], W) - chip[0]) * scale))
    diff = np.abs(got[:out_h, :out_w] - _area_reference(img, chip[0], chip[1], scale, out_h, out_w))
    # The sub-pixel shift is bilinear, so object edges differ by a fraction of a step; flat areas agree.
    assert diff.mean() < 1.0 and np.percentile(diff, 95) <= 2.5  # half a source pixel off: ~2.1 and ~5


@pytest.mark.parametrize("chip", [(17, 9, 145, 137), (0, 0, 128, 128), (192, 112, 320, 240)])
def test_scale_one_at_whole_pixels_is_an_exact_copy(source, chip):
    path, img = source
    got = _hwc(_mapper()(_dict(path, chip, 1.0)))
    np.testing.assert_array_equal(got, img[chip[1]:chip[3], chip[0]:chip[2]])


def test_chip_smaller_than_chip_size_is_zero_padded_bottom_right(source):
    path, img = source
    out = _mapper(chip_size=128)(_dict(path, (0, 0, W, H), 0.25))  # the whole image, 80 x 60 px
    got = _hwc(out)
    assert out["image"].shape == (3, 128, 128) and out["height"] == out["width"] == 128
    assert (got[60:] == 0).all() and (got[:, 80:] == 0).all()
    assert got[:60, :80].mean() > 50  # the content itself is not black


def test_chip_reaching_past_the_image_border_keeps_only_image_content(source):
    path, img = source
    chip = (260.0, 200.0, 388.0, 328.0)  # 60 x 40 px inside the image
    got = _hwc(_mapper()(_dict(path, chip, 1.0)))
    np.testing.assert_array_equal(got[:40, :60], img[200:, 260:])
    assert (got[40:] == 0).all() and (got[:, 60:] == 0).all()


def test_jpeg_read_at_half_scale_uses_reduced_decoding_and_stays_close(source, tmp_path):
    _, img = source
    path = tmp_path / "src.jpg"
    Image.fromarray(img).save(path, quality=95)
    decoded = np.asarray(Image.open(path).convert("RGB"))
    chip = (31.0, 17.0, 287.0, 233.0)
    got = _hwc(_mapper()(_dict(path, chip, 0.5))).astype(np.float64)
    expected = _area_reference(decoded, chip[0], chip[1], 0.5, 108, 128)
    diff = np.abs(got[:108, :128] - expected)
    assert diff.mean() < 1.2 and np.percentile(diff, 95) <= 3  # half a source pixel off: ~2.2 and ~5.6


# --- boxes -------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(x0=st.floats(0, 300), y0=st.floats(0, 220), scale=st.floats(0.25, 3.0), flip=st.booleans())
def test_boxes_follow_the_exact_map_clipped_to_the_chip(source, x0, y0, scale, flip):
    path, _ = source
    chip = (x0, y0, x0 + 64 / scale, y0 + 64 / scale)
    mapper = _mapper(chip_size=64, flip=flip)
    out = mapper(_dict(path, chip, scale)) if not flip else _always_flipping(mapper, _dict(path, chip, scale))
    extent_w = min(64.0, (min(chip[2], W) - x0) * scale)
    extent_h = min(64.0, (min(chip[3], H) - y0) * scale)
    mapped = (BOXES - [x0, y0, x0, y0]) * scale
    clipped = np.clip(mapped, 0, [extent_w, extent_h, extent_w, extent_h])
    overlaps = ((clipped[:, 2] - clipped[:, 0]) > 0) & ((clipped[:, 3] - clipped[:, 1]) > 0)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == np.flatnonzero(overlaps).tolist()
    expected = clipped[overlaps]
    content_w = min(64, round((min(chip[2], W) - x0) * scale))
    if flip:  # np.random.seed(0): the first rand() is 0.549, so force the flip to check its boxes
        expected = np.stack([content_w - expected[:, 2], expected[:, 1], content_w - expected[:, 0],
                             expected[:, 3]], axis=1)
    np.testing.assert_allclose(inst.gt_boxes.tensor.numpy(), expected, atol=2e-4)
    assert inst.gt_boxes.tensor.dtype == torch.float32 and inst.gt_valid.dtype == torch.bool


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.5])
def test_boxes_land_on_their_objects(source, scale):
    path, _ = source
    chip = (183.3, 101.7, 183.3 + 128 / scale, 101.7 + 128 / scale)
    out = _mapper()(_dict(path, chip, scale))
    got = _hwc(out)
    inst = out["instances"]
    assert 1 in inst.gt_classes.tolist()
    box = inst.gt_boxes.tensor[inst.gt_classes.tolist().index(1)].numpy()
    np.testing.assert_allclose(box, np.clip((BOXES[1] - [183.3, 101.7, 183.3, 101.7]) * scale, 0, 128), atol=1e-3)
    # Pixels whose footprint (plus one source pixel of interpolation support) lies inside the box
    # are the object's colour; pixels just outside it are not.
    m = 1.0 + scale
    inner = got[int(math.ceil(box[1] + m)):int(box[3] - m), int(math.ceil(box[0] + m)):int(box[2] - m)]
    assert inner.size and (inner == COLORS[1]).all()
    outside_row = int(math.floor(box[1] - m))
    assert not (got[outside_row, int(box[0]):int(box[2])] == COLORS[1]).all(axis=1).any()


def test_flip_mirrors_pixels_and_boxes_within_the_content(source, monkeypatch):
    path, _ = source
    chip, scale = (200.0, 0.0, 456.0, 256.0), 0.5  # 60 px of content in a 128 px chip
    plain = _mapper()(_dict(path, chip, scale))
    monkeypatch.setattr(np.random, "rand", lambda: 0.0)
    flipped = _mapper(flip=True)(_dict(path, chip, scale))
    w = 60
    a, b = _hwc(plain), _hwc(flipped)
    np.testing.assert_array_equal(b[:, :w], a[:, :w][:, ::-1])
    assert (b[:, w:] == 0).all(), "padding stays at the right"
    p = plain["instances"].gt_boxes.tensor
    np.testing.assert_allclose(flipped["instances"].gt_boxes.tensor.numpy(),
                               torch.stack([w - p[:, 2], p[:, 1], w - p[:, 0], p[:, 3]], 1).numpy())
    assert flipped["instances"].gt_valid.tolist() == plain["instances"].gt_valid.tolist()


# --- valid flags -------------------------------------------------------------------------------------

def test_valid_range_is_on_the_original_unclipped_size_lo_inclusive_hi_exclusive(source):
    path, _ = source
    boxes = np.array([[10, 10, 30, 30], [40, 10, 80, 50], [90, 10, 150, 70], [100, 100, 140, 140]])  # 20, 40, 60, 40
    chip = (0, 0, 120, 160)  # box 2 is half inside, box 3 fully inside
    out = _mapper(chip_size=256, min_visible_fraction=0.5)(_dict(path, chip, 1.0, boxes=boxes, valid_range=(20, 60)))
    assert out["instances"].gt_valid.tolist() == [True, True, False, True]
    out = _mapper(chip_size=256)(_dict(path, chip, 1.0, boxes=boxes, valid_range=(21, -1)))
    assert out["instances"].gt_valid.tolist() == [False, True, True, True], "hi = -1 means no upper bound"


def test_truncated_boxes_below_the_visible_fraction_are_invalid(source):
    path, _ = source
    boxes = np.array([[90, 10, 130, 50], [110, 10, 150, 50], [0, 100, 40, 140]])  # 75 %, 25 %, 100 % inside
    chip = (0, 0, 120, 160)
    flags = [_mapper(chip_size=256, min_visible_fraction=f)(_dict(path, chip, 1.0, boxes=boxes))["instances"]
             .gt_valid.tolist() for f in (0.2, 0.5, 0.75, 0.8)]
    assert flags == [[True, True, True], [True, False, True], [True, False, True], [False, False, True]]


def test_crowd_boxes_are_ignore_regions_or_dropped_per_config(source):
    path, _ = source
    d = _dict(path, (0, 0, W, H), 1.0, crowd=(1,))
    out = _mapper(chip_size=320, crowd_as_ignore=True)(d)
    assert out["instances"].gt_classes.tolist() == [0, 1, 2, 3]
    assert out["instances"].gt_valid.tolist() == [True, False, True, True]
    out = _mapper(chip_size=320, crowd_as_ignore=False)(d)
    assert out["instances"].gt_classes.tolist() == [0, 2, 3] and all(out["instances"].gt_valid.tolist())


def test_chip_without_objects_gives_empty_instances(source):
    path, _ = source
    for annotations in (BOXES, BOXES[:0]):
        out = _mapper()(_dict(path, (120, 0, 184, 32), 2.0, boxes=annotations))
        inst = out["instances"]
        assert len(inst) == 0 and inst.gt_boxes.tensor.shape == (0, 4) and out["image"].shape == (3, 128, 128)


# --- other sources and failures ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gray", "rgba", "gray16"])
def test_gray_rgba_and_16bit_sources(tmp_path, kind):
    rgb = _background(60, 80)
    if kind == "gray":
        img, expected = Image.fromarray(rgb[..., 0]), np.repeat(rgb[..., :1], 3, axis=2)
    elif kind == "rgba":
        img, expected = Image.fromarray(np.dstack([rgb, np.full((60, 80), 255, np.uint8)])), rgb
    else:
        img, expected = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), np.repeat(rgb[..., :1], 3, axis=2)
    path = tmp_path / f"{kind}.png"
    img.save(path)
    out = _mapper()(_dict(path, (10, 5, 74, 53), 1.0, boxes=BOXES[:0], h=60, w=80))
    np.testing.assert_array_equal(_hwc(out)[:48, :64], expected[5:53, 10:74])


def test_unreadable_image_raises_or_is_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "broken.png"
    Image.fromarray(_background(60, 80)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    d = _dict(path, (0, 0, 64, 48), 1.0, h=60, w=80)
    with pytest.raises(ImageReadError, match=r"broken\.png: corrupt or truncated"):
        _mapper()(d)
    mapper = _mapper(skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="sniper_d2.data.mapper"):
        assert mapper(d) is None and mapper(_dict(tmp_path / "gone.png", (0, 0, 64, 48), 1.0)) is None
    assert mapper.num_skipped == 2
    assert "broken.png" in caplog.text and "gone.png" in caplog.text and "2 skipped so far" in caplog.text


def test_from_config_reads_the_sniper_keys():
    from detectron2.config import get_cfg

    from sniper_d2.config import add_sniper_config

    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.SNIPER.CHIP_SIZE, cfg.SNIPER.MIN_VISIBLE_FRACTION = 320, 0.7
    cfg.SNIPER.CROWD_AS_IGNORE, cfg.SNIPER.SKIP_BAD_IMAGES = False, True
    cfg.INPUT.RANDOM_FLIP = "none"
    m = SniperDatasetMapper(cfg)
    assert (m.chip_size, m.min_visible_fraction, m.crowd_as_ignore, m.skip_bad_images, m.horizontal_flip,
            m.image_format) == (320, 0.7, False, True, False, "BGR")
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    assert SniperDatasetMapper(cfg, is_train=True).horizontal_flip
    assert not SniperDatasetMapper(cfg, is_train=False).horizontal_flip


# --- the model takes it ------------------------------------------------------------------------------

def test_tiny_model_trains_on_mapper_output_including_an_empty_chip(source):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    import sniper_d2.modeling  # noqa: F401  (registers SniperRPN, SniperROIHeads)
    from conftest import ROOT
    from sniper_d2.config import add_sniper_config

    cfg = get_cfg()
    add_sniper_config(cfg)
    cfg.merge_from_file(f"{ROOT}/configs/Base-SNIPER-RCNN-FPN.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", 18,
                         "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.FPN.OUT_CHANNELS", 64,
                         "MODEL.ROI_BOX_HEAD.FC_DIM", 128, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 64,
                         "MODEL.ROI_HEADS.NUM_CLASSES", 4, "MODEL.RPN.POST_NMS_TOPK_TRAIN", 100,
                         "SNIPER.CHIP_SIZE", 256, "INPUT.FORMAT", "RGB"])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    path, _ = source
    mapper = SniperDatasetMapper(cfg)
    batch = [mapper(_dict(path, (150, 40, 406, 296), 1.0, valid_range=(50, 100))),  # valid + invalid boxes
             mapper(_dict(path, (120, 0, 184, 32), 4.0))]  # a negative chip: no boxes at all
    assert len(batch[1]["instances"]) == 0 and not batch[0]["instances"].gt_valid.all()
    with EventStorage():
        losses = model(batch)
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
