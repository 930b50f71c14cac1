"""Tiled inference over many images with prefetching: tiles are cut in data-loader workers while the
model runs, batched across image boundaries, and the detections regrouped per image.

A ``torch.utils.data.IterableDataset`` over (image, scale, window): each image is opened by one
worker (:func:`~sniper_d2.image_io.open_image`: TIFFs by windows, other formats decoded once),
which yields its tiles in order; the loader batches ``TILE_BATCH_SIZE`` consecutive tiles of a
worker, which may span images. :func:`run_tiled_inference` runs the model on each batch
(:meth:`MultiScaleTiledPredictor.detect_tiles`) and, as soon as the last tile of an image is back,
merges that image (:meth:`MultiScaleTiledPredictor.merge`) and yields it. Memory: a worker holds one
open image and ``prefetch_factor`` batches of tiles; the main process holds tiles of the batch
being run and the unmerged detections of images still in flight.
"""

from typing import NamedTuple, Optional, Tuple

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..chips import resolve_scale
from ..image_io import ImageReadError, open_image

__all__ = ["ImageTask", "TileItem", "TileDataset", "build_tile_loader", "run_tiled_inference",
           "finest_reduction"]


class ImageTask(NamedTuple):
    """One image to run: a file, or an (H, W, 3) uint8 array already in memory."""

    index: int  # the caller's key (e.g. position in its list); results come back with it
    file_name: str = ""
    image: Optional[np.ndarray] = None
    expected_size: Optional[Tuple[int, int]] = None  # (H, W) the data set says; a mismatch is an error


class TileItem(NamedTuple):
    """One tile of one image, as the loader yields it (``tile`` None: the image has no tile to run)."""

    index: int
    num_tiles: int  # tiles of this image in all (0 when unreadable or vanishing at every scale)
    tile: object  # sniper_d2.inference.predictor.Tile or None
    image_size: Tuple[int, int]
    error: str = ""  # why the image could not be read (ImageReadError.reason; "" when it could)


def finest_reduction(params, image_size):
    """1 / the largest test scale of an image: decode-once formats may be decoded this much reduced."""
    scales = [resolve_scale(s, image_size, params.fit_size) for s in params.scales]
    return 1.0 / max(scales) if scales else 1.0


class TileDataset(IterableDataset):
    """(image, scale, window) items of a list of :class:`ImageTask`, as :class:`TileItem`.

    Images are split over data-loader workers (task ``i`` to worker ``i % num_workers``); a worker
    opens one image at a time and yields all its tiles.

    Args:
        tasks (list[ImageTask]). predictor (MultiScaleTiledPredictor): its ``scale_windows`` and
        ``cut_tile`` (no model call happens here). image_format (str): "BGR" or "RGB".
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
            with open_image(task.file_name, self.image_format,
                            max_reduction=lambda size: finest_reduction(self.predictor.params, size)) as reader:
                if task.expected_size is not None and tuple(reader.image_size) != tuple(task.expected_size):
                    raise ImageReadError(task.file_name, f"image is {reader.image_size[1]}x{reader.image_size[0]} "
                                         f"(WxH, after EXIF rotation) but the data set says "
                                         f"{task.expected_size[1]}x{task.expected_size[0]}; its boxes would not match")
                yield from self._cut(task, reader, reader.image_size)
        except ImageReadError as e:
            yield TileItem(task.index, 0, None, (0, 0), e.reason)

    def _cut(self, task, source, image_size):
        plan = self.predictor.scale_windows(image_size)
        total = sum(len(windows) for _, _, windows in plan)
        if total == 0:
            yield TileItem(task.index, 0, None, tuple(image_size))
        for s_idx, scale, windows in plan:
            for window in windows:
                yield TileItem(task.index, total, self.predictor.cut_tile(source, window, scale, s_idx),
                               tuple(image_size))


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


def run_tiled_inference(predictor, loader):
    """Run the model over a tile loader; yield each image as soon as its last tile is back.

    Yields:
        (index, detections or None, image_size, error): ``detections`` as
        :meth:`MultiScaleTiledPredictor.merge` returns them (CPU tensors), None with ``error`` (why,
        as ``ImageReadError.reason``) for an unreadable image. Order: completion order.
    """
    pending = {}  # index -> [parts, tiles received]
    for batch in loader:
        tiles = [item for item in batch if item.tile is not None]
        detections = predictor.detect_tiles([item.tile for item in tiles]) if tiles else []
        for item in batch:
            if item.tile is None:  # unreadable, or no tile at any scale
                if item.error:
                    yield item.index, None, item.image_size, item.error
                else:
                    yield item.index, predictor.merge([]), item.image_size, ""
        for item, det in zip(tiles, detections):
            entry = pending.setdefault(item.index, [[], 0])
            entry[0].append(det)
            entry[1] += 1
            if entry[1] == item.num_tiles:
                del pending[item.index]
                yield item.index, predictor.merge(entry[0]), item.image_size, ""
    if pending:  # pragma: no cover  (a worker died mid-image; the loader raises before this)
        raise RuntimeError(f"tiles missing for images {sorted(pending)}")
