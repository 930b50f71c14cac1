"""Tiled inference over many images with prefetching: tiles are cut in data-loader workers while the
model runs, batched across image boundaries, and the detections regrouped per image.

A ``torch.utils.data.IterableDataset`` over (image, scale, window): each image is opened by one
worker (:func:`~sniper_d2.image_io.open_image`: TIFFs by windows, other formats decoded once or
read by rows), which yields its tiles in order, the last one carrying how many tiles the image sent
and the pixels cut per scale (an image without a tile, or unreadable, gives one item without a
tile); windows wholly in nodata are not cut (nor run). The loader batches ``TILE_BATCH_SIZE``
consecutive items of a worker, which may span images.
:func:`run_tiled_inference` runs the model on each batch (:meth:`MultiScaleTiledPredictor.detect_tiles`)
and, as soon as the last tile of an image is back, merges that image
(:meth:`MultiScaleTiledPredictor.merge`) and yields it.

AutoFocus (``SNIPER.TEST.MODE "autofocus"``): the workers cut the coarsest scale's tiles
(:func:`~sniper_d2.inference.autofocus.first_scale`); when an image's coarse pass is back, the main
process continues AutoFocus on a reader of the image (the finer windows depend on that pass).

Memory: a worker holds one open image and ``prefetch_factor`` batches of tiles; the main process
holds tiles of the batch being run and the unmerged detections of images still in flight.
"""

from typing import NamedTuple, Optional, Tuple

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..chips import resolve_scale
from ..image_io import ImageReadError, check_image_size, open_image

__all__ = ["ImageTask", "TileItem", "TileDataset", "build_tile_loader", "run_tiled_inference",
           "finest_reduction"]


class ImageTask(NamedTuple):
    """One image to run: a file, or an (H, W, 3) uint8 array already in memory."""

    index: int  # the caller's key (e.g. position in its list); results come back with it
    file_name: str = ""
    image: Optional[np.ndarray] = None
    expected_size: Optional[Tuple[int, int]] = None  # (H, W) the data set says; a mismatch is an error


class TileItem(NamedTuple):
    """One tile of one image as the loader yields it (``tile`` None: the image has no tile to run)."""

    index: int
    tile: object  # sniper_d2.inference.predictor.Tile or None
    image_size: Tuple[int, int]
    num_tiles: int = -1  # on the image's last item: its tiles in all (-1 on the others)
    pixels: tuple = ()  # on the last item: scaled pixels cut per SNIPER.TEST.SCALES entry (nodata left out)
    error: str = ""  # on the last item: why the image could not be read (ImageReadError.reason)

    @property
    def last(self):
        return self.num_tiles >= 0 or bool(self.error)


def finest_reduction(params, image_size):
    """1 / the largest test scale of an image: images decoded once may be decoded this much reduced."""
    scales = [resolve_scale(s, image_size, params.fit_size) for s in params.scales]
    return 1.0 / max(scales) if scales else 1.0


def open_task_image(task, params, image_format):
    """An open reader of ``task``'s file (checked against its expected size), for the tiles of ``params``."""
    reader = open_image(task.file_name, image_format, max_reduction=lambda size: finest_reduction(params, size),
                        max_image_pixels=params.max_image_pixels)
    try:
        check_image_size(task.file_name, reader.image_size, task.expected_size)
    except ImageReadError:
        reader.close()
        raise
    return reader


class TileDataset(IterableDataset):
    """(image, scale, window) items of a list of :class:`ImageTask`, as :class:`TileItem`.

    Images are split over data-loader workers (task ``i`` to worker ``i % num_workers``); a worker
    opens one image at a time and yields all its tiles, then the image's last item.

    Args:
        tasks (list[ImageTask]). predictor (MultiScaleTiledPredictor): its ``scale_windows`` and
        ``cut_tiles`` (no model call happens here). image_format (str): "BGR" or "RGB".
    """

    def __init__(self, tasks, predictor, image_format="BGR"):
        from .predictor import MultiScaleTiledPredictor

        self.tasks = list(tasks)
        # The tiling steps only: workers never see (nor receive a pickled copy of) the model.
        self.predictor = MultiScaleTiledPredictor(None, predictor.params)
        self.image_format = image_format

    def __iter__(self):
        info = get_worker_info()
        mine = self.tasks if info is None else self.tasks[info.id::info.num_workers]
        for task in mine:
            yield from self._tiles(task)

    def _tiles(self, task):
        if task.image is not None:
            yield from self._cut(task, task.image, task.image.shape[:2])
            return
        try:
            with open_task_image(task, self.predictor.params, self.image_format) as reader:
                yield from self._cut(task, reader, reader.image_size)
        except ImageReadError as e:
            yield TileItem(task.index, None, (0, 0), error=e.reason)

    def _plan(self, image_size):
        """[(scale index, scale, windows)] the workers cut: every scale, or AutoFocus's first one."""
        params = self.predictor.params
        if params.mode != "autofocus":
            return self.predictor.scale_windows(image_size)
        from .autofocus import first_scale

        first = first_scale(params, image_size)
        return [first] if first is not None else []

    def _cut(self, task, source, image_size):
        """The image's tiles, one behind, so that the last one can carry the count and the pixels."""
        size = tuple(image_size)
        pixels = np.zeros(len(self.predictor.params.scales), np.int64)
        sent, previous = 0, None
        for s_idx, scale, windows in self._plan(image_size):
            for tile in self.predictor.cut_tiles(source, windows, scale, s_idx, pixels):
                if previous is not None:
                    yield TileItem(task.index, previous, size)
                sent, previous = sent + 1, tile
        yield TileItem(task.index, previous, size, sent, tuple(int(v) for v in pixels))


def _as_list(batch):
    return batch


def tile_loader_workers(cfg):
    """Data-loader workers cutting tiles: ``SNIPER.TEST.NUM_WORKERS``, or for -1
    ``DATALOADER.NUM_WORKERS`` when ``MODEL.DEVICE`` is a GPU and 0 on the CPU (see config.py)."""
    workers = int(cfg.SNIPER.TEST.NUM_WORKERS)
    if workers >= 0:
        return workers
    return int(cfg.DATALOADER.NUM_WORKERS) if str(cfg.MODEL.DEVICE).startswith("cuda") else 0


def build_tile_loader(tasks, predictor, image_format="BGR", num_workers=0, prefetch_batches=2):
    """DataLoader of lists of up to ``TILE_BATCH_SIZE`` :class:`TileItem` (see :class:`TileDataset`)."""
    num_workers = min(int(num_workers), len(tasks))
    return DataLoader(TileDataset(tasks, predictor, image_format), batch_size=predictor.params.tile_batch_size,
                      collate_fn=_as_list, num_workers=num_workers,
                      prefetch_factor=prefetch_batches if num_workers > 0 else None,
                      persistent_workers=False)


def _detect(predictor, tiles, raw):
    """Per-tile detections of a batch; in AutoFocus mode each tile filtered by its image's first-scale
    range (:func:`~sniper_d2.inference.autofocus.first_scale_range`) and its raw output appended to ``raw``."""
    if raw is None:
        return predictor.detect_tiles(tiles) if tiles else []
    from .autofocus import first_scale_range

    groups = {}
    for k, tile in enumerate(tiles):
        groups.setdefault(first_scale_range(predictor.params, tile.image_size), []).append(k)
    detections, outputs = [None] * len(tiles), [None] * len(tiles)
    for valid_range, ks in groups.items():
        got = []
        for k, det in zip(ks, predictor.detect_tiles([tiles[k] for k in ks], got, valid_range)):
            detections[k] = det
        for k, out in zip(ks, got):
            outputs[k] = out
    raw.extend(outputs)
    return detections


def _finish(predictor, task, parts, raw, last, image_format):
    """(index, detections, image_size, error) of an image whose tiles are all back."""
    if last.error:
        return task.index, None, last.image_size, last.error
    if raw is None:
        return task.index, {**predictor.merge(parts), "pixels": np.asarray(last.pixels, np.int64)}, last.image_size, ""
    from .autofocus import CoarsePass, autofocus_predict, first_scale
    from .predictor import cat_detections

    first = first_scale(predictor.params, last.image_size)
    coarse = CoarsePass(cat_detections(parts), raw, int(last.pixels[first[0]]) if first is not None else 0)
    if task.image is not None:
        return task.index, autofocus_predict(predictor, task.image, coarse), last.image_size, ""
    try:
        with open_task_image(task, predictor.params, image_format) as reader:
            return task.index, autofocus_predict(predictor, reader, coarse), last.image_size, ""
    except ImageReadError as e:
        return task.index, None, last.image_size, e.reason


def run_tiled_inference(predictor, loader):
    """Run the model over a tile loader (:func:`build_tile_loader`); yield each image as soon as its
    last tile is back.

    Yields:
        (index, detections or None, image_size, error): ``detections`` as
        :meth:`MultiScaleTiledPredictor.merge` returns them (CPU tensors) plus ``pixels`` (S,)
        int64, the scaled pixels run per scale (AutoFocus: as :func:`autofocus_predict` returns);
        None with ``error`` (why, as ``ImageReadError.reason``) for an unreadable image. Order:
        completion order.
    """
    dataset = loader.dataset
    tasks = {task.index: task for task in dataset.tasks}
    autofocus = predictor.params.mode == "autofocus"
    pending = {}  # index -> [per-tile detections, raw outputs (AutoFocus) or None, last item or None]
    for batch in loader:
        tiles = [item for item in batch if item.tile is not None]
        raw = [] if autofocus else None
        detections = _detect(predictor, [item.tile for item in tiles], raw)
        for k, (item, det) in enumerate(zip(tiles, detections)):
            entry = pending.setdefault(item.index, [[], [] if autofocus else None, None])
            entry[0].append(det)
            if autofocus:
                entry[1].append(raw[k])
        for item in batch:
            if item.last:
                pending.setdefault(item.index, [[], [] if autofocus else None, None])[2] = item
        done = [i for i, (parts, _, last) in pending.items()
                if last is not None and (last.error or len(parts) == last.num_tiles)]
        for index in done:
            parts, outputs, last = pending.pop(index)
            yield _finish(predictor, tasks[index], parts, outputs, last, dataset.image_format)
    if pending:  # pragma: no cover  (a worker died mid-image; the loader raises before this)
        raise RuntimeError(f"tiles missing for images {sorted(pending)}")
