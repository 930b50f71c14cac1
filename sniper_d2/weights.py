"""Resolving ``MODEL.WEIGHTS`` at start-up, through detectron2's iopath ``PathManager``.

detectron2 resolves ``detectron2://...``, ``catalog://...`` and ``https://...`` weights with iopath's
``PathManager``: from its cache (``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``), downloaded once
when missing. We do the same at start-up, so that a machine without internet fails at once with a
message that says what to do, instead of with a network error from deep inside the checkpointer.
"""

import contextlib
import pickle

__all__ = ["WeightsError", "resolve_weights", "checkpoint_read_errors"]

_URL_PREFIXES = ("detectron2://", "http://", "https://", "catalog://")


class WeightsError(FileNotFoundError):
    """The configured weights are neither a local file nor in (or downloadable to) iopath's cache."""


def resolve_weights(weights):
    """Return a local path detectron2 can load, "" for training from scratch.

    Args:
        weights (str): ``MODEL.WEIGHTS``: "", a local path, or a URL / ``detectron2://`` /
            ``catalog://`` name.

    Returns:
        str: ``weights`` itself for a local file; for a URL, the file in iopath's cache (downloaded
        there first when missing).

    Raises:
        WeightsError: a local path that does not exist, or a URL that is not cached and cannot be
            downloaded (no internet).
    """
    if not weights:
        return ""
    from detectron2.utils.file_io import PathManager  # iopath, with detectron2's URL handlers

    if not weights.startswith(_URL_PREFIXES):
        if not PathManager.isfile(weights):
            raise WeightsError(f"MODEL.WEIGHTS file {weights} not found")
        return weights
    try:
        return PathManager.get_local_path(weights)
    except OSError as e:  # urllib's URLError (no internet, no such host) is an OSError
        raise WeightsError(
            f"MODEL.WEIGHTS is {weights}, which is not in iopath's cache and could not be downloaded ({e}). "
            "Download it on a machine with internet and pass the file: `MODEL.WEIGHTS /path/to/R-50.pkl` "
            "on the command line, or train from scratch with `MODEL.WEIGHTS \"\"`.") from e


@contextlib.contextmanager
def checkpoint_read_errors(path):
    """Within this context, the errors ``torch.load`` / ``pickle`` raise for a file that is not a
    checkpoint they can read (a text file, a truncated download, a newer format) become one
    :class:`WeightsError` naming ``path`` and the reason (the first line of the original message).
    """
    try:
        yield
    except (pickle.UnpicklingError, EOFError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a checkpoint this torch can read ({reason})") from e
