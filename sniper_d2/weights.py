"""Resolving ``MODEL.WEIGHTS`` on machines that may have no internet.

detectron2 downloads ``detectron2://...`` and ``https://...`` weights on first use. Where that is
impossible we fail at start-up with a message that says what to do, instead of a network error from
deep inside the checkpointer. Nothing here opens a network connection.
"""

import os

__all__ = ["WeightsError", "resolve_weights"]

_URL_PREFIXES = ("detectron2://", "http://", "https://", "catalog://")


class WeightsError(FileNotFoundError):
    """The configured weights are neither a local file nor already in the local cache."""


def _cached_copy(url):
    """Where detectron2/fvcore would have cached ``url``, if that file exists."""
    from urllib.parse import urlparse

    cache_root = os.environ.get("FVCORE_CACHE", os.path.expanduser("~/.torch/iopath_cache"))
    if url.startswith("detectron2://"):
        url = "https://dl.fbaipublicfiles.com/detectron2/" + url[len("detectron2://"):]
    parsed = urlparse(url)
    candidate = os.path.join(cache_root, parsed.path.lstrip("/"))
    return candidate if os.path.isfile(candidate) else None


def resolve_weights(weights):
    """Return a path detectron2 can load without a download, "" for training from scratch.

    Args:
        weights (str): ``MODEL.WEIGHTS``: "", a local path, or a URL / ``detectron2://`` name.

    Raises:
        WeightsError: a local path that does not exist, or a URL not in the local cache.
    """
    if not weights:
        return ""
    if weights.startswith(_URL_PREFIXES):
        cached = _cached_copy(weights)
        if cached:
            return cached
        if os.environ.get("SNIPER_ALLOW_DOWNLOAD") == "1":
            return weights
        raise WeightsError(
            f"MODEL.WEIGHTS is {weights}, which is not in the local cache, and sniper_d2 does not download "
            "weights by itself. Download it on a machine with internet and pass the file: "
            "`MODEL.WEIGHTS /path/to/R-50.pkl` on the command line (or set SNIPER_ALLOW_DOWNLOAD=1 to let "
            "detectron2 download it), or train from scratch with `MODEL.WEIGHTS \"\"`.")
    if not os.path.isfile(weights):
        raise WeightsError(f"MODEL.WEIGHTS file {weights} not found")
    return weights
