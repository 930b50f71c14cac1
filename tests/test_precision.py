"""SNIPER.TEST.PRECISION: which precision runs where, that the forward pass really runs under it, and
that what comes out is float32 in original pixels whatever the model's output dtype."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from sniper_d2.config_types import ConfigError
from sniper_d2.inference import MultiScaleTiledPredictor, TiledInferenceParams
from sniper_d2.inference import precision as precision_mod
from sniper_d2.inference.precision import backbone_autocast, inference_autocast, resolve_precision

from test_tiling import BlobModel, painted

PARAMS = TiledInferenceParams(scales=(1.0, 0.5), valid_ranges=((0.0, -1.0), (0.0, -1.0)), tile_size=128,
                              tile_overlap=64, tile_batch_size=4, score_thresh=0.0)


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_exactly_where_the_cpu_runs_it_natively(monkeypatch, native):
    monkeypatch.setattr(precision_mod, "cpu_has_native_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for: honoured even where it is emulated


def test_native_bf16_needs_amx_tiles_with_bf16_in_the_cpu_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
    flags = precision_mod.cpu_flags(str(cpuinfo))
    assert {"avx2", "amx_tile", "amx_bf16", "avx512_bf16"} <= flags
    assert precision_mod.cpu_has_native_bf16(flags) == torch.backends.mkldnn.is_available()
    assert not precision_mod.cpu_has_native_bf16(flags - {"amx_tile"})
    assert not precision_mod.cpu_has_native_bf16({"avx2", "avx512_bf16"})  # bf16 emulated without AMX
    assert precision_mod.cpu_flags(str(tmp_path / "missing")) == set()  # other systems: "auto" is fp32


def test_unknown_or_impossible_precisions_are_refused_by_name():
    with pytest.raises(ConfigError, match="SNIPER.TEST.PRECISION must be one of"):
        resolve_precision("half", "cpu")
    with pytest.raises(ConfigError, match="'fp16' needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="SNIPER.TEST.PRECISION must be one of"):
        replace(PARAMS, precision="float16")


class AutocastRecordingModel(BlobModel):
    """BlobModel that records the autocast state of each call and returns its boxes and scores in the
    dtype a 16-bit forward pass would give (bfloat16 under CPU autocast)."""

    def __init__(self):
        super().__init__()
        self.autocast = []

    def __call__(self, inputs):
        on = torch.is_autocast_enabled("cpu")
        dtype = torch.get_autocast_dtype("cpu") if on else torch.float32
        self.autocast.append((on, dtype))
        outputs = super().__call__(inputs)
        for out in outputs:
            inst = out["instances"]
            half = Instances(inst.image_size)
            half.pred_boxes = Boxes(inst.pred_boxes.tensor.to(dtype))
            half.scores = inst.scores.to(dtype)
            half.pred_classes = inst.pred_classes
            out["instances"] = half
        return outputs


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_forward_pass_runs_in_the_asked_precision_and_results_are_float32(precision):
    gt = np.array([[20, 30, 52, 62], [150, 100, 190, 180]])  # exact in bfloat16 (8 significant bits)
    model = AutocastRecordingModel()
    predictor = MultiScaleTiledPredictor(model, replace(PARAMS, precision=precision))
    det = predictor(painted(200, 240, gt))
    expected = (precision == "bf16", torch.bfloat16 if precision == "bf16" else torch.float32)
    assert model.autocast and all(state == expected for state in model.autocast)
    assert det["boxes"].dtype == torch.float32 and det["scores"].dtype == torch.float32
    boxes = det["boxes"].numpy()[np.argsort(det["boxes"][:, 0].numpy())]
    np.testing.assert_allclose(boxes, gt, atol=2.0)


def test_autocast_is_off_outside_the_forward_pass():
    with inference_autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    with inference_autocast("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


def _tiny_detector():
    """The tiny config's detector, random weights with trained-like batch-norm statistics, prepared
    as tools/infer.py prepares it."""
    from detectron2.modeling import build_model

    from sniper_d2.cli import setup_cfg
    from sniper_d2.inference.fast_model import prepare_for_inference
    from test_fast_model import _random_stats

    cfg = setup_cfg("configs/sniper_tiny_cpu.yaml", ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                                     "MODEL.RPN.POST_NMS_TOPK_TEST", "50"], purpose="read")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _random_stats(model, 1, spread=0.3)
    return prepare_for_inference(model)


IMAGES = [{"image": torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)),
           "height": 96, "width": 128}]


def test_only_the_backbone_runs_in_bf16_and_the_heads_get_float32_features():
    model = _tiny_detector()
    seen = {}

    def record(key, tensor):
        seen.setdefault(key, tensor.dtype)  # returns None: the hooks change nothing

    hooks = [model.backbone.bottom_up.stem.conv1.register_forward_hook(lambda m, a, out: record("backbone conv", out)),
             model.proposal_generator.register_forward_pre_hook(lambda m, args: record("rpn features", args[1]["p2"])),
             model.roi_heads.box_head.register_forward_hook(lambda m, a, out: record("box head", out))]
    with torch.no_grad(), backbone_autocast(model, "bf16", "cpu"):
        model(IMAGES)
    for h in hooks:
        h.remove()
    assert seen == {"backbone conv": torch.bfloat16, "rpn features": torch.float32, "box head": torch.float32}
    assert not model.backbone._forward_hooks and not model.backbone._forward_pre_hooks
    assert not torch.is_autocast_enabled("cpu")


def test_a_failing_forward_pass_leaves_no_hook_and_no_autocast_behind():
    model = _tiny_detector()
    with pytest.raises(Exception):
        with torch.no_grad(), backbone_autocast(model, "bf16", "cpu"):
            model.backbone(torch.zeros((1, 3, 0, 8)))  # raises inside the backbone, between the hooks
    assert not torch.is_autocast_enabled("cpu")
    assert not model.backbone._forward_hooks and not model.backbone._forward_pre_hooks


def test_a_bf16_detector_finds_nearly_the_same_boxes_as_fp32():
    """fp32 vs bf16 backbone: the confident fp32 detections are found again in bf16 within bfloat16
    rounding (a random-weight model has near-ties, where rounding can swap a proposal: nearly all)."""
    model = _tiny_detector()
    with torch.no_grad():
        full = model(IMAGES)[0]["instances"]
        with backbone_autocast(model, "bf16", "cpu"):
            half = model(IMAGES)[0]["instances"]
    assert len(full) > 0
    top = full.scores >= full.scores.max() * 0.5
    b32, b16 = full.pred_boxes.tensor[top], half.pred_boxes.tensor
    assert half.pred_boxes.tensor.dtype == torch.float32
    # a confident fp32 box has a bf16 box of its class within a few pixels
    dist = (b32[:, None, :] - b16[None, :, :]).abs().max(-1).values
    same = full.pred_classes[top][:, None] == half.pred_classes[None, :]
    found = dist.masked_fill(~same, float("inf")).min(1).values <= 3.0
    assert len(found) >= 10 and found.float().mean() >= 0.9


def test_a_backbone_converted_once_gives_the_detections_of_autocast():
    """prepare_for_inference(precision="bf16") converts the backbone's weights once; running it then
    (input converted, no autocast) gives what autocast gives on the float32 model."""
    import copy

    from sniper_d2.inference.fast_model import prepare_for_inference
    from sniper_d2.inference.precision import backbone_precision

    model = _tiny_detector()
    converted = prepare_for_inference(copy.deepcopy(model), precision="bf16")
    assert backbone_precision(converted) == "bf16" and backbone_precision(model) == "fp32"
    assert all(p.dtype == torch.float32 for p in converted.roi_heads.parameters())  # heads untouched
    with torch.no_grad():
        with backbone_autocast(model, "bf16", "cpu"):
            expected = model(IMAGES)[0]["instances"]
        with backbone_autocast(converted, "bf16", "cpu"):
            got = converted(IMAGES)[0]["instances"]
    assert len(got) == len(expected) > 0
    torch.testing.assert_close(got.pred_boxes.tensor, expected.pred_boxes.tensor, rtol=0, atol=1e-2)
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-4)
    assert not torch.is_autocast_enabled("cpu")


def test_a_converted_backbone_refuses_another_precision():
    import copy

    from sniper_d2.inference.fast_model import prepare_for_inference

    converted = prepare_for_inference(copy.deepcopy(_tiny_detector()), precision="bf16")
    with pytest.raises(ConfigError, match="converted to bf16"):
        MultiScaleTiledPredictor(converted, replace(PARAMS, precision="fp32"))
    MultiScaleTiledPredictor(converted, replace(PARAMS, precision="bf16"))  # the matching one runs
