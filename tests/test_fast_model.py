"""prepare_for_inference: batch norms folded into convolutions, channels-last weights; same outputs.
build_inference_model: the one way tools get a prepared model from a config."""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling import build_model

import sniper_d2.modeling  # noqa: F401
from sniper_d2.cli import setup_cfg
from sniper_d2.inference.fast_model import build_inference_model, fold_batch_norms, prepare_for_inference


def _random_stats(model, seed, spread=1.0):
    """Batch-norm statistics and affine parameters away from the identity (as a trained model has)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5 * spread)
            m.running_var.copy_(1 + (torch.rand(n, generator=g) * 2 - 0.9) * spread)
            m.weight.data.copy_(1 + (torch.rand(n, generator=g) - 0.5) * spread)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2 * spread)


def test_folding_a_conv_and_its_batch_norm_gives_the_same_output():
    for norm, bias in ((torch.nn.BatchNorm2d(5), False), (FrozenBatchNorm2d(5), True)):
        conv = Conv2d(3, 5, 3, padding=1, bias=bias, norm=norm, activation=torch.relu).eval()
        _random_stats(conv, 0)
        x = torch.randn(2, 3, 9, 11)
        expected = conv(x)
        assert fold_batch_norms(conv) == 1 and conv.norm is None
        torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_a_prepared_detector_finds_the_same_boxes():
    cfg = setup_cfg("configs/sniper_tiny_cpu.yaml", ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                                     "MODEL.RPN.POST_NMS_TOPK_TEST", "50"], purpose="read")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _random_stats(model, 1, spread=0.3)  # deep enough to leave detections
    images = [{"image": torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8), "height": 96, "width": 128}
              for _ in range(2)]
    with torch.no_grad():
        expected = model(images)
        n_norms = sum(isinstance(m, Conv2d) and m.norm is not None for m in model.modules())
        prepare_for_inference(model)
        got = model(images)
    assert n_norms > 0 and not any(isinstance(m, Conv2d) and m.norm is not None for m in model.modules())
    assert model.backbone.bottom_up.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for e, g in zip(expected, got):
        e, g = e["instances"], g["instances"]
        assert len(e) == len(g) > 0
        torch.testing.assert_close(g.pred_boxes.tensor, e.pred_boxes.tensor, rtol=1e-3, atol=1e-2)
        torch.testing.assert_close(g.scores, e.scores, rtol=1e-3, atol=1e-4)
        assert torch.equal(g.pred_classes, e.pred_classes)


def test_folding_a_conv_whose_norm_has_no_affine_parameters():
    conv = Conv2d(3, 4, 1, bias=True, norm=torch.nn.BatchNorm2d(4, affine=False)).eval()
    conv.norm.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    conv.norm.running_var.copy_(torch.tensor([0.25, 4.0, 1.0, 9.0]))
    x = torch.randn(1, 3, 5, 5)
    expected = conv(x)
    assert fold_batch_norms(conv) == 1
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-5)
    assert not conv.weight.requires_grad and not conv.bias.requires_grad


def test_the_inference_model_is_the_checkpoint_prepared(tmp_path):
    cfg = setup_cfg("configs/sniper_tiny_cpu.yaml", ["SNIPER.TEST.PRECISION", "fp32"], purpose="read")
    torch.manual_seed(0)
    trained = build_model(cfg).eval()
    _random_stats(trained, 2, spread=0.3)
    DetectionCheckpointer(trained, save_dir=str(tmp_path)).save("trained")
    model = build_inference_model(cfg, str(tmp_path / "trained.pth"))
    assert not model.training
    assert not any(isinstance(m, Conv2d) and m.norm is not None for m in model.modules())
    image = [{"image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8), "height": 64, "width": 64}]
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(model.preprocess_image(image).tensor)["p2"],
                                   trained.backbone(trained.preprocess_image(image).tensor)["p2"],
                                   rtol=1e-3, atol=2e-3)


def test_an_inference_model_without_weights_is_refused_in_one_line(tmp_path):
    cfg = setup_cfg("configs/sniper_tiny_cpu.yaml", [], purpose="read")
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS is empty"):
        build_inference_model(cfg, "")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_inference_model(cfg, str(tmp_path / "missing.pth"))
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(FileNotFoundError, match=r"notes\.pth: not a checkpoint this torch can read \([^\n]*\)$"):
        build_inference_model(cfg, str(tmp_path / "notes.pth"))
