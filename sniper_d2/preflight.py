"""Start-up: fail fast on the user's inputs, then a quiet detectron2 set-up.

:func:`preflight` runs before anything is printed, so that a wrong path or class count is among the
first lines a user sees, in one line naming the file or key and the fix:

- every ``SNIPER.REGISTER_COCO`` json file and image folder exists (then the data sets are
  registered, which also validates the json);
- every data set the run uses is registered (training: ``DATASETS.TRAIN`` and ``DATASETS.TEST``,
  which training evaluates at the end; evaluation / inference: ``DATASETS.TEST``);
- ``MODEL.ROI_HEADS.NUM_CLASSES`` equals the category count of each of those data sets (detectron2
  would train silently and fail at evaluation with a 20-line COCOEvaluator traceback);
- ``MODEL.WEIGHTS`` is a local file, or in the local cache (:func:`sniper_d2.weights.resolve_weights`).

:func:`default_setup` is detectron2's ``default_setup`` except that the environment, the command
line and the config dump go to ``OUTPUT_DIR/log.txt`` only (not the terminal), without colour codes;
the terminal gets colours only when it is a terminal.
"""

import logging
import os
import sys

__all__ = ["preflight", "check_data_files", "check_num_classes", "default_setup"]


def check_data_files(cfg):
    """Every ``SNIPER.REGISTER_COCO`` json file and image folder exists.

    Raises:
        DatasetError: one line naming the data set and the missing path.
        ConfigError: an entry that is not a (name, json_file, image_root) triple.
    """
    from .coco import DatasetError
    from .config_types import ConfigError

    for entry in cfg.SNIPER.REGISTER_COCO:
        if len(entry) != 3:
            raise ConfigError(f"SNIPER.REGISTER_COCO entries are (name, json_file, image_root); got {entry!r}")
        name, json_file, image_root = entry
        if not os.path.isfile(json_file):
            raise DatasetError(f"data set '{name}': json file {os.path.abspath(json_file)} not found "
                               f"(SNIPER.REGISTER_COCO)")
        if image_root and not os.path.isdir(image_root):
            raise DatasetError(f"data set '{name}': image folder {os.path.abspath(image_root)} not found "
                               f"(SNIPER.REGISTER_COCO)")


def _datasets_used(cfg, purpose):
    names = list(cfg.DATASETS.TEST)
    if purpose == "train":
        names = list(cfg.DATASETS.TRAIN) + [n for n in names if n not in cfg.DATASETS.TRAIN]
    return names


def check_num_classes(cfg, names):
    """``MODEL.ROI_HEADS.NUM_CLASSES`` equals each registered data set's category count.

    Data sets whose metadata has no ``thing_classes`` (not loaded yet) are skipped.

    Raises:
        ConfigError: a data set name that is not registered, or a class count that differs.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from .config_types import ConfigError

    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            key = "DATASETS.TRAIN" if name in cfg.DATASETS.TRAIN else "DATASETS.TEST"
            raise ConfigError(f"{key} names data set '{name}', which is not registered: add "
                              f"(\"{name}\", json_file, image_root) to SNIPER.REGISTER_COCO")
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is None:
            continue
        if len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            source = MetadataCatalog.get(name).get("json_file", name)
            raise ConfigError(f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but data set "
                              f"'{name}' ({source}) has {len(classes)} categories: set MODEL.ROI_HEADS.NUM_CLASSES "
                              f"{len(classes)}")


def preflight(cfg, purpose="train", strict_data=True):
    """The start-up checks of a run, before anything is printed (see the module docstring).

    Args:
        cfg (CfgNode): the merged config, not frozen (``MODEL.WEIGHTS`` is resolved in place).
        purpose (str): "train" (training sets and the test sets evaluated at the end) or "infer"
            (evaluation, proposal dump, inference: the test sets).
        strict_data (bool): False for tools that do not need the data sets (inference on images):
            registered jsons that are missing are skipped instead of refused, and only the data sets
            present are checked.

    Side effects: registers the ``SNIPER.REGISTER_COCO`` data sets (those present).
    """
    from .data.datasets import register_coco_json
    from .weights import resolve_weights

    if strict_data:
        check_data_files(cfg)
    cfg.MODEL.WEIGHTS = resolve_weights(cfg.MODEL.WEIGHTS)
    present = [e for e in cfg.SNIPER.REGISTER_COCO
               if strict_data or (len(e) == 3 and os.path.isfile(e[1]) and (not e[2] or os.path.isdir(e[2])))]
    for entry in present:
        register_coco_json(*entry)
    names = _datasets_used(cfg, purpose)
    if not strict_data:
        names = [n for n in names if n in {e[0] for e in present}]
    check_num_classes(cfg, names)


def _file_logger(output_dir, rank):
    """A logger writing plain lines to the run's log file only.

    A ``logging.FileHandler`` of ours on the file detectron2's ``setup_logger`` also appends to:
    both open it in append mode and flush every record, so the lines stay in order.
    """
    logger = logging.getLogger("sniper_d2.setup_dump")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if output_dir and not logger.handlers:
        filename = os.path.join(output_dir, "log.txt") + (f".rank{rank}" if rank > 0 else "")
        handler = logging.FileHandler(filename, mode="a")
        handler.setFormatter(logging.Formatter("[%(asctime)s] d2.engine.defaults INFO: %(message)s",
                                               datefmt="%m/%d %H:%M:%S"))
        logger.addHandler(handler)
    return logger


def default_setup(cfg, args):
    """detectron2's ``default_setup`` with the environment and config dump in the log file only.

    Sets up the ``fvcore``, ``detectron2`` and ``sniper_d2`` loggers (terminal: rank 0, colour only
    on a terminal; file: ``OUTPUT_DIR/log.txt``), logs the environment, the command line and the
    config to the file, saves ``OUTPUT_DIR/config.yaml``, seeds the RNGs (``SEED`` + rank) and sets
    cudnn benchmarking for training, as detectron2 does.
    """
    import torch
    from detectron2.utils import comm
    from detectron2.utils.collect_env import collect_env_info
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.logger import setup_logger

    output_dir = cfg.OUTPUT_DIR
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    rank = comm.get_rank()
    color = sys.stdout.isatty()
    setup_logger(output_dir, distributed_rank=rank, name="fvcore", color=color)
    logger = setup_logger(output_dir, distributed_rank=rank, color=color)
    setup_logger(output_dir, distributed_rank=rank, name="sniper_d2", abbrev_name="sniper", color=color)
    dump = _file_logger(output_dir, rank)
    logger.info(f"Rank of current process: {rank}. World size: {comm.get_world_size()}")
    dump.info("Environment info:\n" + collect_env_info())
    dump.info("Command line arguments: " + str(args))
    config_file = getattr(args, "config_file", "")
    if config_file:
        with open(config_file) as f:
            dump.info(f"Contents of args.config_file={config_file}:\n{f.read()}")
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        dump.info("Running with full config:\n" + cfg.dump())
        with open(path, "w") as f:
            f.write(cfg.dump())
        logger.info(f"Full config saved to {path}; environment, arguments and config are in "
                    f"{os.path.join(output_dir, 'log.txt')}")
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
