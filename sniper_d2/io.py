"""Atomic, versioned files: everything sniper_d2 writes (plans, proposals, results, stats).

Numpy only. A file is written to a temporary name in the destination folder and renamed into
place (``os.replace``), so a killed process leaves either the old file or the new one, never a
half-written one. Every file carries a ``format`` name and a ``version``; readers refuse files of
another format, another version, or that cannot be parsed, with an error naming the file.
"""

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager

import numpy as np

__all__ = [
    "ArtifactError",
    "atomic_open",
    "save_json_artifact",
    "load_json_artifact",
    "save_npz_artifact",
    "load_npz_artifact",
    "stable_hash",
    "read_json_file",
]


class ArtifactError(RuntimeError):
    """A file we wrote earlier is missing, truncated, of another format/version, or stale."""


@contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file next to ``path``; on success, rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched. The file gets
    the mode ``open()`` would give a new file (0666 minus the process umask), not ``mkstemp``'s 0600,
    so other users and containers can read what we write.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _current_umask():
    """The process umask: from /proc on Linux (no side effect), else set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def stable_hash(obj):
    """A short, stable hex digest of a JSON-serializable object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _check_header(path, header, fmt, version):
    if not isinstance(header, dict) or header.get("format") != fmt:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise ArtifactError(f"{path}: expected a '{fmt}' file, found format {found!r}")
    if header.get("version") != version:
        raise ArtifactError(
            f"{path}: '{fmt}' format version {header.get('version')!r} is not supported "
            f"(this sniper_d2 reads version {version}); regenerate the file"
        )


def save_json_artifact(path, fmt, version, payload):
    """Write ``{"format": fmt, "version": version, **payload}`` as JSON, atomically."""
    record = {"format": fmt, "version": version}
    record.update(payload)
    with atomic_open(path, "w") as f:
        json.dump(record, f, default=_json_default)


def read_json_file(path, error_class, what="json file"):
    """Parse a JSON file, raising ``error_class("<path>: ...")`` if it is missing or not JSON.

    Args:
        path (str): the file.
        error_class (type[Exception]): the error to raise (e.g. ``ArtifactError``, ``DatasetError``).
        what (str): how the message names the file when it is missing ("<path>: <what> not found").
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise error_class(f"{path}: {what} not found")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error_class(f"{path}: not valid JSON (truncated or corrupt?): {e}") from e


def load_json_artifact(path, fmt, version):
    """Read a file written by :func:`save_json_artifact`, checking its format and version."""
    path = os.fspath(path)
    record = read_json_file(path, ArtifactError, what="file")
    _check_header(path, record, fmt, version)
    return record


def save_npz_artifact(path, fmt, version, header, arrays):
    """Write numpy arrays plus a JSON header into one ``.npz`` file, atomically.

    Args:
        path (str): destination; should end in ``.npz``.
        fmt (str), version (int): format name and version, checked by :func:`load_npz_artifact`.
        header (dict): JSON-serializable metadata (hashes, config, ...).
        arrays (dict[str, np.ndarray]): the data.
    """
    meta = {"format": fmt, "version": version}
    meta.update(header)
    blob = np.frombuffer(json.dumps(meta, default=_json_default).encode("utf-8"), dtype=np.uint8)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, __header__=blob, **arrays)


def load_npz_artifact(path, fmt, version):
    """Read a file written by :func:`save_npz_artifact`.

    Returns:
        (header: dict, arrays: dict[str, np.ndarray])
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, EOFError, ValueError, OSError, ...
        raise ArtifactError(f"{path}: cannot be read as a .npz file (truncated or corrupt?): {e}") from e
    if "__header__" not in arrays:
        raise ArtifactError(f"{path}: has no sniper_d2 header; not a file written by sniper_d2")
    header = json.loads(arrays.pop("__header__").tobytes().decode("utf-8"))
    _check_header(path, header, fmt, version)
    return header, arrays
