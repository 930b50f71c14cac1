"""The numeric precision of the detector's forward pass at inference (``cfg.SNIPER.TEST.PRECISION``).

Mixed precision through ``torch.autocast``, for the BACKBONE only (ResNet + FPN: nearly all of the
convolutions' time): its feature maps are returned as float32, so the RPN, the ROI heads (scores,
box regression, NMS) and the focus head run in float32 as trained. A model without a ``backbone``
(a stand-in) runs its whole forward pass under autocast, and every box and score we read is
converted to float32 before it is mapped to original pixels. Values:

- ``"fp32"``: no autocast (the model's float32 weights as trained).
- ``"bf16"``: bfloat16 autocast on the model's device (CPU or a CUDA GPU that supports bfloat16).
- ``"fp16"``: float16 autocast, CUDA only (detectron2's AMP precision).
- ``"auto"``: ``"bf16"`` where the hardware runs it natively (a CPU with AMX-BF16 tiles, e.g.
  Intel Sapphire Rapids and later, where oneDNN's bfloat16 convolutions are several times faster
  than float32; a CUDA GPU with bfloat16 support), ``"fp32"`` elsewhere (on CPUs without AMX,
  bfloat16 is emulated and slower than float32).

Detections differ from float32 by rounding only; ``benchmarks/precision_ap.py`` measures the AP of
both on the same models and images.

A model prepared for inference only (:func:`sniper_d2.inference.fast_model.prepare_for_inference`
with a 16-bit precision, as ``tools/infer.py`` does) has its backbone weights converted once
(:func:`cast_backbone`); its backbone then gets its input in that type and returns float32, without
autocast, which would cast every weight again on every forward pass (the same detections, 12%
less time per tile here).
"""

import contextlib

import torch

from ..config_types import ConfigError

__all__ = ["PRECISIONS", "check_precision_name", "cpu_flags", "cpu_has_native_bf16", "model_device_type", "resolve_precision", "inference_autocast",
           "cast_backbone", "backbone_precision", "check_backbone_precision", "backbone_autocast"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def cpu_flags(path="/proc/cpuinfo"):
    """The instruction-set flags of this machine's first CPU, as Linux lists them in ``path``
    ("flags" line of ``/proc/cpuinfo``: "avx2", "avx512_bf16", "amx_tile", ...); an empty set where
    the file does not exist or has no such line (other systems).

    torch has no public query for these (``torch.backends.cpu.get_cpu_capability()`` names the
    vector width its kernels use, "AVX512" at best, not AMX).
    """
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(flags=None):
    """True when this CPU has AMX tiles with bfloat16 (oneDNN runs bf16 convolutions natively).

    Args:
        flags (set[str] or None): the CPU's flags; None = :func:`cpu_flags` (Linux; on other
            systems the answer is False, and "auto" precision then means float32).
    """
    flags = cpu_flags() if flags is None else flags
    return {"amx_tile", "amx_bf16", "avx512_bf16"} <= flags and torch.backends.mkldnn.is_available()


def model_device_type(model):
    """"cpu" or "cuda": where ``model`` (a detectron2 model, any nn.Module, or a stand-in) runs."""
    device = getattr(model, "device", None)
    if device is None and isinstance(model, torch.nn.Module):
        first = next(model.parameters(), None)
        device = first.device if first is not None else None
    return torch.device(device or "cpu").type


def check_precision_name(precision):
    """Raise ConfigError unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"SNIPER.TEST.PRECISION must be one of {PRECISIONS}, got {precision!r}")


def resolve_precision(precision, device_type):
    """The precision to run on ``device_type`` ("cpu" or "cuda"): "fp32", "bf16" or "fp16".

    Raises:
        ConfigError: an unknown name, or one the device cannot run (fp16 on the CPU, bf16 on a GPU
            without bfloat16).
    """
    check_precision_name(precision)
    cuda = device_type == "cuda"
    if precision == "auto":
        native = torch.cuda.is_bf16_supported() if cuda else device_type == "cpu" and cpu_has_native_bf16()
        return "bf16" if native else "fp32"
    if precision == "fp16" and not cuda:
        raise ConfigError(f"SNIPER.TEST.PRECISION 'fp16' needs a CUDA device (the model is on {device_type!r}); "
                          "use 'bf16' or 'auto' on the CPU")
    if precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ConfigError("SNIPER.TEST.PRECISION 'bf16': this GPU does not support bfloat16; use 'fp16'")
    return precision


def inference_autocast(precision, device_type):
    """A context manager running the forward pass in ``precision`` (already resolved, see
    :func:`resolve_precision`) on ``device_type``; a no-op for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=_DTYPES[precision])


def _backbone_of(model):
    backbone = getattr(model, "backbone", None)
    return backbone if isinstance(backbone, torch.nn.Module) else None


def backbone_precision(model):
    """"bf16" / "fp16" when ``model.backbone``'s weights were converted (:func:`cast_backbone`), else
    "fp32" (also for a model without a backbone)."""
    backbone = _backbone_of(model)
    first = next(backbone.parameters(), None) if backbone is not None else None
    return _NAMES.get(first.dtype, "fp32") if first is not None else "fp32"


def check_backbone_precision(model, precision):
    """Raise ConfigError when ``model.backbone`` was converted (:func:`cast_backbone`) to another
    precision than ``precision`` (resolved), which it then cannot run; else return
    :func:`backbone_precision`."""
    converted = backbone_precision(model)
    if converted != "fp32" and converted != precision:
        raise ConfigError(f"the model's backbone was converted to {converted} for inference (prepare_for_inference); "
                          f"it cannot run in precision {precision!r} (SNIPER.TEST.PRECISION)")
    return converted


def cast_backbone(model, precision):
    """Convert ``model.backbone``'s weights to ``precision`` (resolved: "bf16" / "fp16"; "fp32" does
    nothing), in place, for inference only. Returns True when converted."""
    backbone = _backbone_of(model)
    if precision == "fp32" or backbone is None:
        return False
    backbone.to(_DTYPES[precision])
    return True


def _to_float32(output):
    if torch.is_tensor(output):
        return output.float()
    if isinstance(output, dict):
        return {k: _to_float32(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float32(v) for v in output)
    return output


@contextlib.contextmanager
def backbone_autocast(model, precision, device_type):
    """Within this context, ``model.backbone`` runs under :func:`inference_autocast` and returns its
    features as float32; everything else in ``model`` runs in float32. A model without a
    ``backbone`` module runs its whole forward pass under autocast. No-op for "fp32".

    A backbone already converted by :func:`cast_backbone` gets its input converted to its type and
    no autocast.

    Implemented with a forward pre-hook / hook pair on the backbone, removed on exit (also when the
    forward pass raises; autocast is then left too).

    Raises:
        ConfigError: the backbone was converted to another 16-bit type than ``precision``, or
            ``precision`` is "fp32" for a converted backbone.
    """
    converted = check_backbone_precision(model, precision)
    backbone = _backbone_of(model)
    if precision == "fp32":
        yield
        return
    if backbone is None:
        with inference_autocast(precision, device_type):
            yield
        return
    active = []  # the autocast context entered by the pre-hook, until the hook leaves it

    def enter(module, args):
        if converted != "fp32":  # weights already 16-bit: convert the input instead of autocasting
            return tuple(a.to(_DTYPES[converted]) if torch.is_tensor(a) and a.is_floating_point() else a
                         for a in args)
        ctx = inference_autocast(precision, device_type)
        ctx.__enter__()
        active.append(ctx)
        return None

    def leave(module, args, output):
        if active:
            active.pop().__exit__(None, None, None)
        return _to_float32(output)

    handles = [backbone.register_forward_pre_hook(enter), backbone.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        while active:  # the backbone raised between the two hooks
            active.pop().__exit__(None, None, None)
