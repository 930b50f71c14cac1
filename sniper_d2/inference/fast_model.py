"""Make a trained detector cheaper to run for inference only, with the same outputs.

:func:`build_inference_model` is the one way a tool gets its detector for inference (tools/infer.py,
``train_net.py --eval-only``, the proposal dump, the benchmarks): the config's model, its weights,
then :func:`prepare_for_inference`:

- **Batch norms folded into their convolutions.** detectron2's ``Conv2d`` applies its ``norm``
  after the convolution; in eval mode a ``BatchNorm2d`` (or ``FrozenBatchNorm2d``) is the affine
  map ``y = (x - mean) / sqrt(var + eps) * gamma + beta`` per channel, so torch's
  ``torch.nn.utils.fusion.fuse_conv_bn_weights`` folds it exactly into the convolution's weight and
  bias, and the norm is removed: one pass over each feature map instead of two (outputs equal up to
  float rounding).
- **Channels-last memory** on the CPU: oneDNN's convolutions and max pooling work in NHWC; with the
  weights in that layout the backbone stays in it instead of reordering every feature map.
- **16-bit backbone weights** when asked (``precision``, as ``SNIPER.TEST.PRECISION``; "auto"
  resolves on the model's device): converted once instead of autocast converting them on every
  forward pass; the detections are those of autocast (see :mod:`sniper_d2.inference.precision`).

The model is changed in place and is no longer trainable as before (no batch-norm statistics): use it
for inference only. The evaluation during training keeps the training model untouched.
"""

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .precision import cast_backbone, model_device_type, resolve_precision

__all__ = ["fold_batch_norms", "prepare_for_inference", "build_inference_model"]


def _foldable(norm):
    from detectron2.layers import FrozenBatchNorm2d

    return isinstance(norm, FrozenBatchNorm2d) or (
        isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats and norm.running_mean is not None)


@torch.no_grad()
def fold_batch_norms(model):
    """Fold each detectron2 ``Conv2d``'s batch norm into the convolution, in place.

    ``FrozenBatchNorm2d`` (detectron2's, not a torch BatchNorm module) has the same buffers as an
    eval ``BatchNorm2d`` (weight, bias, running_mean, running_var, eps), so both go through torch's
    ``fuse_conv_bn_weights``.

    Returns:
        int: the number of batch norms folded (other norms, e.g. GroupNorm, are left as they are).
    """
    from detectron2.layers import Conv2d

    folded = 0
    for module in model.modules():
        if not (isinstance(module, Conv2d) and _foldable(module.norm)):
            continue
        bn = module.norm
        module.weight, module.bias = fuse_conv_bn_weights(module.weight, module.bias, bn.running_mean,
                                                          bn.running_var, bn.eps, bn.weight, bn.bias)
        module.weight.requires_grad_(False)
        module.bias.requires_grad_(False)
        module.norm = None
        folded += 1
    return folded


def prepare_for_inference(model, channels_last=None, precision="fp32"):
    """Eval mode, batch norms folded (:func:`fold_batch_norms`), channels-last weights on the CPU,
    the backbone's weights in ``precision``.

    Args:
        model (nn.Module): a detectron2 model with its weights loaded; changed in place.
        channels_last (bool or None): None = when the model's parameters are on the CPU.
        precision (str): a ``SNIPER.TEST.PRECISION`` value; the predictor running the model must
            resolve to the same (pass the config's value).

    Returns:
        the same model.
    """
    model.eval()
    fold_batch_norms(model)
    if channels_last is None:
        first = next(model.parameters(), None)
        channels_last = first is not None and first.device.type == "cpu"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    cast_backbone(model, resolve_precision(precision, model_device_type(model)))
    return model


def build_inference_model(cfg, weights=None, *, precision=None):
    """The config's detector with its weights, ready for inference only (:func:`prepare_for_inference`).

    Args:
        cfg (CfgNode): the tool's config (``MODEL.*``, ``SNIPER.TEST.PRECISION``).
        weights (str or None): checkpoint file or URL (:func:`sniper_d2.weights.resolve_weights`);
            None = ``cfg.MODEL.WEIGHTS``.
        precision (str or None): the backbone's precision; None = ``cfg.SNIPER.TEST.PRECISION``. Give
            "fp32" to a model that detectron2's own evaluation runs (no backbone conversion there).

    Returns:
        nn.Module: the model, in eval mode, batch norms folded, channels-last on the CPU.

    Raises:
        FileNotFoundError: no weights given (a model with random weights would run and find
            nothing), or ``WeightsError``: the file does not exist or is not a checkpoint.
    """
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from .. import modeling  # noqa: F401  (registers the SNIPER heads and SniperFocusRCNN)
    from ..weights import checkpoint_read_errors, resolve_weights

    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    if not weights:
        raise FileNotFoundError("MODEL.WEIGHTS is empty: give the trained model, e.g. MODEL.WEIGHTS "
                                "output/model_final.pth")
    weights = resolve_weights(weights)
    model = build_model(cfg)
    with checkpoint_read_errors(weights):
        DetectionCheckpointer(model).load(weights)
    return prepare_for_inference(model, precision=cfg.SNIPER.TEST.PRECISION if precision is None else precision)
