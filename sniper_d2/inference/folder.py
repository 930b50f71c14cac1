"""Tiled inference over a list of image files, in one or several processes, resumable.

What ``tools/infer.py`` runs in every process (``comm`` rank / world size from detectron2's launch,
or from the CPU gloo launch): the files not done yet are split ``rank::world``; each process runs its
share through the prefetching tile pipeline (:mod:`sniper_d2.inference.pipeline`) and rewrites its
partial result (``<output>/partial/part-g<G>-rank<R>.json``, atomic, versioned) every ``save_every``
images. At the end the main process merges every partial result into ``results.json`` (sorted by
image id, each image's detections by decreasing score, so N processes write the same file as one),
writes ``results_meta.json`` and removes the partial folder. ``resume=True`` keeps the partial
results of an interrupted run (any number of processes) and skips their images; they must come from
the same config, threshold and inputs (``run_key``), or the run stops naming the file.

One progress bar (main process) counts every process's images, through the process group's store.
"""

import glob
import logging
import os
import shutil
import time

import cv2
import numpy as np
from detectron2.utils import comm

from ..coco import boxes_xyxy_to_xywh
from ..io import ArtifactError, load_json_artifact, save_json_artifact, stable_hash
from ..visualize import draw_detections
from .autofocus import full_inference_pixels
from .pipeline import ImageTask, build_tile_loader, run_tiled_inference

__all__ = ["run_key", "infer_files", "load_partial_results", "draw_detections", "PARTIAL_FORMAT"]

logger = logging.getLogger("sniper_d2.infer")
PARTIAL_FORMAT = ("sniper_d2.infer_partial", 1)


def run_key(cfg, files, confidence_threshold):
    """What makes two runs' results interchangeable: the config, the threshold and the inputs."""
    return stable_hash({"config": cfg.dump(), "threshold": float(confidence_threshold), "files": list(files)})


def _partial_dir(output_dir):
    return os.path.join(output_dir, "partial")


def load_partial_results(output_dir, key):
    """Every partial result under ``output_dir``: (done {image_id: file}, results list, skipped list,
    pixels {file: pixels through the detector per test scale}).

    Raises:
        ArtifactError: a partial file is damaged or comes from another run (config, threshold or inputs).
    """
    done, results, skipped = {}, [], []
    pixels = {}
    for path in sorted(glob.glob(os.path.join(_partial_dir(output_dir), "part-*.json"))):
        part = load_json_artifact(path, *PARTIAL_FORMAT)
        if part.get("run_key") != key:
            raise ArtifactError(f"{path}: partial results of another run (config, threshold or inputs differ); "
                                f"remove {_partial_dir(output_dir)} or run without --resume")
        done.update({int(i): f for i, f in part["done"]})
        results += part["results"]
        skipped += part["skipped"]
        pixels.update(part.get("pixels", {}))
    return done, results, skipped, pixels


def _coco_results(image_id, file_name, det, threshold, to_dataset_id):
    keep = det["scores"] >= threshold
    return [{"image_id": image_id, "file_name": file_name, "category_id": to_dataset_id.get(cls, cls),
             "bbox": [round(float(v), 2) for v in box], "score": round(float(score), 4)}
            for box, score, cls in zip(boxes_xyxy_to_xywh(det["boxes"][keep].numpy()), det["scores"][keep].tolist(),
                                       det["classes"][keep].tolist())]


class _Progress:
    """One tqdm bar on the main process counting the images of all processes (via the group's store)."""

    KEY = "sniper_d2_infer_images_done"

    def __init__(self, total, initial):
        from tqdm import tqdm

        self.store = None
        if comm.get_world_size() > 1:
            from torch.distributed import distributed_c10d

            self.store = distributed_c10d._get_default_store()
        self.bar = tqdm(total=total, initial=initial, desc="inference", unit="img",
                        disable=not comm.is_main_process())
        self.seen = 0  # images of this run counted on the bar

    def add_mine(self):
        if self.store is None:
            self.bar.update(1)
            return
        self._show(self.store.add(self.KEY, 1))

    def _show(self, count):
        if comm.is_main_process() and count > self.seen:
            self.bar.update(count - self.seen)
            self.seen = count

    def wait_for_all(self, expected):
        """Main process: keep the bar moving until every process's images are counted."""
        while self.store is not None and comm.is_main_process() and self.seen < expected:
            self._show(self.store.add(self.KEY, 0))
            time.sleep(0.2)

    def close(self):
        self.bar.close()


def infer_files(predictor, files, output_dir, cfg, *, confidence_threshold=0.5, to_dataset_id=None,
                class_names=(), draw=True, draw_max_side=4096, resume=False, save_every=8, num_workers=0,
                draw_focus=False, meta=None):
    """Run ``predictor`` over ``files`` in this process's share; merge on the main process.

    Args:
        predictor (MultiScaleTiledPredictor): with the model loaded, eval mode.
        files (list[str]): all inputs, the same list in every process; image id = position + 1.
        output_dir (str): results.json, results_meta.json, drawn images, partial/.
        cfg: the config (its dump is part of the run key). confidence_threshold (float): detections
            saved and drawn. to_dataset_id (dict): contiguous class -> data set category id.
        draw (bool), draw_max_side (int): drawn copies, long side at most this many px.
        resume (bool): skip images in partial results of an interrupted run.
        save_every (int): images between two saves of this process's partial result.
        num_workers (int): data-loader worker processes preparing tiles.
        draw_focus (bool): SNIPER.TEST.MODE "autofocus": also draw ``<stem>_focus.jpg``.
        meta (dict): extra entries for results_meta.json (e.g. the config file).

    Mode "full" runs the prefetching tile pipeline; mode "autofocus" (coarse scale first, finer
    scales only inside focus chips) runs each image in this process (``predictor(image)``).

    Returns:
        dict (main process): images, skipped, detections; None on the other processes.
    """
    rank, world = comm.get_rank(), comm.get_world_size()
    key = run_key(cfg, files, confidence_threshold)
    partial = _partial_dir(output_dir)
    finished = _finished_run(output_dir, key) if resume and not os.path.isdir(partial) else None
    if finished is not None:  # --resume after a run that completed: nothing left to do
        if comm.is_main_process():
            logger.info(f"{output_dir}/results.json already holds this run's {finished['images']} images")
        return finished if comm.is_main_process() else None
    if comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
        if not resume and os.path.isdir(partial):
            shutil.rmtree(partial)
        os.makedirs(partial, exist_ok=True)
    comm.synchronize()
    done = load_partial_results(output_dir, key)[0] if resume else {}
    generation = len({os.path.basename(p).split("-")[1] for p in glob.glob(os.path.join(partial, "part-*.json"))})
    comm.synchronize()  # every process has listed the folder before anyone writes to it
    if done and comm.is_main_process():
        logger.info(f"resuming: {len(done)} of {len(files)} images already done")
    todo = [(i, f) for i, f in enumerate(files, start=1) if i not in done]
    mine = todo[rank::world]
    names = _drawn_names(files)
    my_path = os.path.join(partial, f"part-g{generation:03d}-rank{rank:03d}.json")
    my_done, my_results, my_skipped, my_pixels = [], [], [], {}

    def save():
        save_json_artifact(my_path, *PARTIAL_FORMAT, {"run_key": key, "done": my_done, "results": my_results,
                                                       "skipped": my_skipped, "pixels": my_pixels})

    progress = _Progress(len(files), len(done))
    by_id = dict(mine)
    since_save = 0
    for image_id, det, image_size, error in _detections(predictor, mine, cfg.INPUT.FORMAT, num_workers):
        path = by_id[image_id]
        if error:
            logger.warning(f"skipping an unreadable image: {path}: {error}")
            my_skipped.append(path)
        else:
            my_results += _coco_results(image_id, path, det, confidence_threshold, to_dataset_id or {})
            my_pixels[path] = [int(v) for v in det["pixels"]] if "pixels" in det else \
                [int(v) for v in full_inference_pixels(image_size, predictor.params)]
            if draw_focus:
                _draw_focus(path, det, cfg, os.path.join(output_dir, os.path.splitext(names[path])[0] + "_focus.jpg"))
            if draw:
                drawn = os.path.join(output_dir, names[path])
                if not cv2.imwrite(drawn, draw_detections(path, det, class_names, confidence_threshold,
                                                          draw_max_side)):
                    raise OSError(f"{drawn}: could not write the drawn image")
        my_done.append([image_id, path])
        since_save += 1
        if since_save >= save_every:
            save()
            since_save = 0
        progress.add_mine()
    save()
    progress.wait_for_all(len(todo))
    progress.close()
    comm.synchronize()
    summary = None
    if comm.is_main_process():
        summary = _write_results(output_dir, key, files, cfg, confidence_threshold, meta or {})
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


def _write_results(output_dir, key, files, cfg, threshold, meta):
    """Merge every partial result into results.json (+ results_meta.json); remove the partial folder."""
    import json

    from ..io import atomic_open

    done, results, skipped, pixels = load_partial_results(output_dir, key)
    missing = [f for i, f in enumerate(files, start=1) if i not in done]
    if missing:
        raise RuntimeError(f"{len(missing)} images have no result (first: {missing[0]})")
    order = np.argsort([r["image_id"] for r in results], kind="stable")  # each image's own order is kept
    results = [results[i] for i in order]
    with atomic_open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f)
    skipped = sorted(set(skipped), key=files.index)
    save_json_artifact(os.path.join(output_dir, "results_meta.json"), "sniper_d2.infer_results", 1, {
        "weights": cfg.MODEL.WEIGHTS, "images": len(files) - len(skipped), "skipped": skipped,
        "detections": len(results), "confidence_threshold": threshold, "run_key": key,
        "pixels_per_scale": {f: pixels[f] for f in files if f in pixels}, **meta})
    shutil.rmtree(_partial_dir(output_dir))
    return {"images": len(files) - len(skipped), "skipped": skipped, "detections": len(results),
            "pixels_per_scale": pixels}


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
