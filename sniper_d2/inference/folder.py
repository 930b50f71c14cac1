"""Tiled inference over a list of image files, in one or several processes on one or several
machines, resumable after a kill.

What ``tools/infer.py`` runs in every process (``comm`` rank / world size from detectron2's launch,
or from the CPU gloo launch): the files not done yet are split ``rank::world``; each process runs its
share through the prefetching tile pipeline (:mod:`sniper_d2.inference.pipeline`) and appends one
JSON line per finished image to its own partial file, ``<output>/partial/part-g<G>-rank<R>.jsonl``
(G: the run's generation, one more for each resume; R: the global rank). The work per image is
O(1): nothing already written is read or rewritten.

Partial file format (``PARTIAL_FORMAT``): the first line is the header
``{"format": "sniper_d2.infer_partial", "version": 2, "run_key": ...}``; every other line is one image,
``{"image_id", "file_name", "results": [COCO results], "pixels": [per test scale]}`` or
``{"image_id", "file_name", "skipped": reason}`` for an unreadable file.

Durability: every line is written whole and flushed to the operating system at once, so a killed
process (SIGKILL, out of memory) loses at most the line it was writing; ``os.fsync`` runs every
``fsync_every`` images and at the end, so a power loss loses at most that many images. A torn last
line (a kill in the middle of a write) is dropped when the file is read and its image is run again;
a damaged line anywhere else, or a file of another run, stops the run with an error naming the file.

``resume=True`` reads every partial file (any number of processes and machines before) and skips
their images; they must come from the same config, threshold and inputs (``run_key``). At the end
the main process merges every partial file into ``results.json`` (sorted by image id, each image's
detections in the detector's order, so N processes on M machines write the same file as one),
writes ``results_meta.json`` and removes the partial folder. With several machines, ``output_dir``
must be one folder that every machine sees (a shared file system), as detectron2's OUTPUT_DIR.

Vector output: with ``vector=VectorOutput(...)``, the main process also writes, at the end, the
detections of every georeferenced input (GeoTIFF with a CRS and a geotransform) as map polygons,
one file per input named like its drawn image (``<stem>.geojson`` or ``<stem>.gpkg``), through
:func:`sniper_d2.geo.write_detections_vector`; plain images get none.

One progress bar (main process) counts every process's images from the lines of their partial files.
"""

import glob
import json
import logging
import os
import shutil
import time
from typing import Dict, NamedTuple, Optional

import cv2
import numpy as np
from detectron2.utils import comm

from ..coco import boxes_xyxy_to_xywh
from ..io import ArtifactError, load_json_artifact, save_json_artifact, stable_hash
from ..visualize import draw_detections
from .autofocus import full_inference_pixels
from .pipeline import ImageTask, build_tile_loader, run_tiled_inference

__all__ = ["run_key", "infer_files", "read_partial_file", "load_partial_results", "draw_detections",
           "VectorOutput", "PARTIAL_FORMAT"]

logger = logging.getLogger("sniper_d2.infer")
PARTIAL_FORMAT = ("sniper_d2.infer_partial", 2)


class VectorOutput(NamedTuple):
    """Detections of georeferenced inputs as vector files (see the module docstring).

    Attributes:
        extension (str): ".geojson" or ".gpkg".
        crs (str or None): the CRS to write (e.g. "EPSG:4326" for RFC 7946 GeoJSON); None: the raster's.
        class_names (dict[int, str]): data set category id (as in results.json) -> class name.
    """

    extension: str
    crs: Optional[str]
    class_names: Dict[int, str]


def run_key(cfg, files, confidence_threshold):
    """What makes two runs' results interchangeable: the config, the threshold and the inputs."""
    return stable_hash({"config": cfg.dump(), "threshold": float(confidence_threshold), "files": list(files)})


def _partial_dir(output_dir):
    return os.path.join(output_dir, "partial")


def _partial_files(output_dir):
    return sorted(glob.glob(os.path.join(_partial_dir(output_dir), "part-g*-rank*.jsonl")))


def read_partial_file(path, key):
    """The image records of one partial file (see the module docstring), in the order written.

    A torn last line (no newline at its end: the process was killed while writing it) and a file
    whose header line is torn are tolerated: what they held is run again.

    Raises:
        ArtifactError: the file is of another format or version, from another run (``key``), or has a
            damaged line before its last one.
    """
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    # lines[-1] is b"" for a file ending with a newline, else the torn line of a killed write.
    whole = lines[:-1]
    if not whole:
        return []
    try:
        header = json.loads(whole[0])
    except ValueError as e:
        raise ArtifactError(f"{path}: line 1 is not a JSON header ({e})") from None
    if (header.get("format"), header.get("version")) != PARTIAL_FORMAT:
        raise ArtifactError(f"{path}: format {header.get('format')!r} version {header.get('version')!r}, expected "
                            f"{PARTIAL_FORMAT[0]!r} version {PARTIAL_FORMAT[1]}")
    if header.get("run_key") != key:
        raise ArtifactError(f"{path}: partial results of another run (config, threshold or inputs differ); "
                            f"remove {os.path.dirname(path)} or run without --resume")
    records = []
    for number, line in enumerate(whole[1:], start=2):
        try:
            records.append(json.loads(line))
        except ValueError as e:
            raise ArtifactError(f"{path}: line {number} is damaged ({e})") from None
    return records


def load_partial_results(output_dir, key):
    """Every image record of the partial files under ``output_dir``: {image_id: record}.

    Raises:
        ArtifactError: a partial file is damaged or comes from another run (config, threshold or inputs).
    """
    records = {}
    for path in _partial_files(output_dir):
        for record in read_partial_file(path, key):
            records.setdefault(int(record["image_id"]), record)
    return records


class _PartialWriter:
    """This process's partial file: a header line, then one line per image, appended (see the module
    docstring for the flush and fsync policy)."""

    def __init__(self, path, key, fsync_every):
        self.file = open(path, "x")  # a new generation never appends to an older, maybe torn, file
        self.fsync_every = max(1, int(fsync_every))
        self.unsynced = 0
        self._write({"format": PARTIAL_FORMAT[0], "version": PARTIAL_FORMAT[1], "run_key": key})

    def _write(self, record):
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.file.flush()

    def append(self, record):
        self._write(record)
        self.unsynced += 1
        if self.unsynced >= self.fsync_every:
            os.fsync(self.file.fileno())
            self.unsynced = 0

    def close(self):
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def _coco_results(image_id, file_name, det, threshold, to_dataset_id):
    keep = det["scores"] >= threshold
    return [{"image_id": image_id, "file_name": file_name, "category_id": to_dataset_id.get(cls, cls),
             "bbox": [round(float(v), 2) for v in box], "score": round(float(score), 4)}
            for box, score, cls in zip(boxes_xyxy_to_xywh(det["boxes"][keep].numpy()), det["scores"][keep].tolist(),
                                       det["classes"][keep].tolist())]


class _Progress:
    """One tqdm bar on the main process counting the images of all processes: the lines appended to
    this generation's partial files, each file read from where the last look stopped."""

    def __init__(self, total, initial, pattern):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc="inference", unit="img",
                        disable=not comm.is_main_process())
        self.pattern = pattern
        self.read_bytes, self.newlines = {}, {}

    def image_done(self):
        """Called after each image of this process."""
        if comm.get_world_size() == 1:
            self.bar.update(1)
        else:
            self.poll()

    def poll(self):
        """Main process: count the lines the other processes have appended since the last look."""
        if not comm.is_main_process():
            return
        for path in glob.glob(self.pattern):
            with open(path, "rb") as f:
                f.seek(self.read_bytes.get(path, 0))
                chunk = f.read()
            self.read_bytes[path] = self.read_bytes.get(path, 0) + len(chunk)
            self.newlines[path] = self.newlines.get(path, 0) + chunk.count(b"\n")
        images = sum(max(0, n - 1) for n in self.newlines.values())  # the first line is the header
        self.bar.update(max(0, self.bar.initial + images - self.bar.n))

    def wait_for_all(self):
        """Every process: wait until all have finished their share; the main one moves the bar meanwhile."""
        if comm.get_world_size() == 1:
            return
        import torch.distributed as dist

        barrier = dist.barrier(async_op=True)
        while not barrier.is_completed():
            self.poll()
            time.sleep(0.2)
        barrier.wait()
        self.poll()

    def close(self):
        self.bar.close()


def _start_run(output_dir, key, resume):
    """Main process: prepare ``output_dir`` and say what is done: {"finished": summary or None,
    "done": [image ids in partial files], "generation": int, "error": message or None}."""
    partial = _partial_dir(output_dir)
    state = {"finished": None, "done": [], "generation": 0, "error": None}
    if resume and not os.path.isdir(partial):
        state["finished"] = _finished_run(output_dir, key)
        if state["finished"] is not None:  # --resume after a run that completed: nothing left to do
            return state
    os.makedirs(output_dir, exist_ok=True)
    if not resume and os.path.isdir(partial):
        shutil.rmtree(partial)
    os.makedirs(partial, exist_ok=True)
    if resume:
        try:
            state["done"] = sorted(load_partial_results(output_dir, key))
        except ArtifactError as e:
            state["error"] = str(e)
    state["generation"] = len({os.path.basename(p).split("-")[1] for p in _partial_files(output_dir)})
    return state


def infer_files(predictor, files, output_dir, cfg, *, confidence_threshold=0.5, to_dataset_id=None,
                class_names=(), draw=True, draw_max_side=4096, resume=False, fsync_every=8, num_workers=0,
                draw_focus=False, meta=None, vector=None):
    """Run ``predictor`` over ``files`` in this process's share; merge on the main process.

    Args:
        predictor (MultiScaleTiledPredictor): with the model loaded, eval mode.
        files (list[str]): all inputs, the same list in every process; image id = position + 1.
        output_dir (str): results.json, results_meta.json, drawn images, partial/ (one folder that
            every process sees, on every machine).
        cfg: the config (its dump is part of the run key). confidence_threshold (float): detections
            saved and drawn. to_dataset_id (dict): contiguous class -> data set category id.
        draw (bool), draw_max_side (int): drawn copies, long side at most this many px.
        resume (bool): skip images in partial results of an interrupted run.
        fsync_every (int): images between two ``os.fsync`` of this process's partial file (every
            image is flushed to the operating system at once).
        num_workers (int): data-loader worker processes preparing tiles.
        draw_focus (bool): SNIPER.TEST.MODE "autofocus": also draw ``<stem>_focus.jpg``.
        meta (dict): extra entries for results_meta.json (e.g. the config file).
        vector (VectorOutput or None): also write each georeferenced input's detections as a vector file.

    Mode "full" runs the prefetching tile pipeline; mode "autofocus" (coarse scale first, finer
    scales only inside focus chips) runs each image in this process (``predictor(image)``).

    Returns:
        dict (main process): images, skipped, detections, pixels_per_scale; None on the other processes.

    Raises:
        ArtifactError (every process): with ``resume``, a partial file is damaged or of another run.
    """
    rank, world = comm.get_rank(), comm.get_world_size()
    key = run_key(cfg, files, confidence_threshold)
    partial = _partial_dir(output_dir)
    # The main process reads the folder and tells everyone (a single reader: no race with the writers).
    state = comm.all_gather(_start_run(output_dir, key, resume) if comm.is_main_process() else None)[0]
    if state["error"]:
        raise ArtifactError(state["error"])
    if state["finished"] is not None:
        if comm.is_main_process():
            logger.info(f"{output_dir}/results.json already holds this run's {state['finished']['images']} images")
        return state["finished"] if comm.is_main_process() else None
    if not os.path.isdir(partial):
        raise FileNotFoundError(f"{partial}: not found by process {rank}: with several machines, --output must be "
                                f"one folder every machine sees (a shared file system)")
    done = set(state["done"])
    if done and comm.is_main_process():
        logger.info(f"resuming: {len(done)} of {len(files)} images already done")
    todo = [(i, f) for i, f in enumerate(files, start=1) if i not in done]
    mine = todo[rank::world]
    names = _drawn_names(files)
    generation = f"g{state['generation']:03d}"
    writer = _PartialWriter(os.path.join(partial, f"part-{generation}-rank{rank:03d}.jsonl"), key, fsync_every)
    progress = _Progress(len(files), len(done), os.path.join(partial, f"part-{generation}-rank*.jsonl"))
    by_id = dict(mine)
    try:
        for image_id, det, image_size, error in _detections(predictor, mine, cfg.INPUT.FORMAT, num_workers):
            path = by_id[image_id]
            if error:
                logger.warning(f"skipping an unreadable image: {path}: {error}")
                writer.append({"image_id": image_id, "file_name": path, "skipped": str(error)})
            else:
                if draw_focus:
                    _draw_focus(path, det, cfg,
                                os.path.join(output_dir, os.path.splitext(names[path])[0] + "_focus.jpg"))
                if draw:
                    drawn = os.path.join(output_dir, names[path])
                    if not cv2.imwrite(drawn, draw_detections(path, det, class_names, confidence_threshold,
                                                              draw_max_side)):
                        raise OSError(f"{drawn}: could not write the drawn image")
                pixels = det["pixels"] if "pixels" in det else full_inference_pixels(image_size, predictor.params)
                writer.append({"image_id": image_id, "file_name": path, "pixels": [int(v) for v in pixels],
                               "results": _coco_results(image_id, path, det, confidence_threshold,
                                                        to_dataset_id or {})})
            progress.image_done()
    finally:
        writer.close()
    progress.wait_for_all()
    progress.close()
    summary = None
    if comm.is_main_process():
        summary = _write_results(output_dir, key, files, cfg, confidence_threshold, meta or {}, vector)
    comm.synchronize()
    return summary


def _detections(predictor, mine, image_format, num_workers):
    """(image id, det, image size, error) for this process's (id, file) pairs, as they complete
    (AutoFocus too: the workers cut each image's coarse pass, see :mod:`sniper_d2.inference.pipeline`)."""
    tasks = [ImageTask(i, f) for i, f in mine]
    yield from run_tiled_inference(predictor, build_tile_loader(tasks, predictor, image_format, num_workers))


def _draw_focus(path, det, cfg, focus_path):
    from ..chips import resolve_scale
    from ..image_io import read_image
    from .autofocus import draw_focus

    bgr = read_image(path, format="BGR")
    scales = [resolve_scale(s, bgr.shape[:2], cfg.SNIPER.CHIP_SIZE) for s in cfg.SNIPER.TEST.SCALES]
    if not cv2.imwrite(focus_path, draw_focus(bgr, det["autofocus"], scales)):
        raise OSError(f"{focus_path}: could not write the focus picture")


def _write_results(output_dir, key, files, cfg, threshold, meta, vector):
    """Merge every partial file into results.json (+ results_meta.json, + vector files); remove the
    partial folder."""
    from ..io import atomic_open

    records = load_partial_results(output_dir, key)
    missing = [f for i, f in enumerate(files, start=1) if i not in records]
    if missing:
        raise RuntimeError(f"{len(missing)} images have no result in {_partial_dir(output_dir)} (first: {missing[0]}); "
                           f"with several machines, --output must be a folder every machine sees")
    skipped, pixels, detections = [], {}, 0
    with atomic_open(os.path.join(output_dir, "results.json"), "w") as f:
        f.write("[")  # written image by image, in image id order: never one list of every detection
        for image_id in range(1, len(files) + 1):
            record = records[image_id]
            if "skipped" in record:
                skipped.append(record["file_name"])
                continue
            pixels[record["file_name"]] = record["pixels"]
            for r in record["results"]:
                f.write((", " if detections else "") + json.dumps(r))
                detections += 1
        f.write("]")
    vectors = _write_vectors(output_dir, files, records, vector) if vector is not None else {}
    save_json_artifact(os.path.join(output_dir, "results_meta.json"), "sniper_d2.infer_results", 1, {
        "weights": cfg.MODEL.WEIGHTS, "images": len(files) - len(skipped), "skipped": skipped,
        "detections": detections, "confidence_threshold": threshold, "run_key": key,
        "pixels_per_scale": pixels, "vectors": vectors, **meta})
    shutil.rmtree(_partial_dir(output_dir))
    return {"images": len(files) - len(skipped), "skipped": skipped, "detections": detections,
            "pixels_per_scale": pixels, "vectors": vectors}


def _write_vectors(output_dir, files, records, vector):
    """{input: vector file} for the georeferenced inputs among ``records`` (see :class:`VectorOutput`)."""
    from ..geo import read_georeference, write_detections_vector

    names, written = _drawn_names(files), {}
    for image_id, path in enumerate(files, start=1):
        record = records[image_id]
        if "skipped" in record:
            continue
        georef = read_georeference(path)
        if georef is None:
            continue
        results = record["results"]
        boxes = np.array([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # XYWH -> XYXY, original-raster pixels
        target = os.path.join(output_dir, os.path.splitext(names[path])[0] + vector.extension)
        write_detections_vector(target, georef, boxes, [r["score"] for r in results],
                                [vector.class_names.get(r["category_id"], str(r["category_id"])) for r in results],
                                dst_crs=vector.crs)
        written[path] = target
    if written:
        logger.info(f"{len(written)} georeferenced inputs: detections written as {vector.extension} vector files")
    return written


def _finished_run(output_dir, key):
    """The summary of a completed run with this run key in ``output_dir``, or None."""
    meta_path, results_path = (os.path.join(output_dir, n) for n in ("results_meta.json", "results.json"))
    if not (os.path.isfile(meta_path) and os.path.isfile(results_path)):
        return None
    try:
        meta = load_json_artifact(meta_path, "sniper_d2.infer_results", 1)
    except ArtifactError:
        return None
    if meta.get("run_key") != key:
        return None
    return {"images": meta["images"], "skipped": meta["skipped"], "detections": meta["detections"],
            "pixels_per_scale": meta.get("pixels_per_scale", {})}


def _drawn_names(files):
    """{input path: drawn image name}: "<stem>.jpg", with "_2", "_3", ... where stems repeat."""
    names, used = {}, set()
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, k = f"{stem}.jpg", 1
        while name in used:
            k += 1
            name = f"{stem}_{k}.jpg"
        used.add(name)
        names[path] = name
    return names
