"""What every sniper_d2 command-line tool shares: one config set-up, and user errors in one line.

- :func:`setup_cfg`: the config of every tool (train_net.py, tools/infer.py, tools/plan_chips.py,
  tools/dump_proposals.py, benchmarks): detectron2 defaults + ``cfg.SNIPER`` keys + yaml file +
  command-line overrides, unknown keys reported as :class:`~sniper_d2.config_types.ConfigError` naming the
  file and the key, then the start-up checks, then detectron2's ``default_setup``.
- :func:`run_main` / :func:`run_cli`: run a tool's ``main``; the project's own error classes (and a
  missing file) end the program with ``<program>: error: <message>`` (exit status 1); anything else
  (a ``KeyError`` from a library bug, say) keeps its traceback.

Importing this module needs numpy only (the statistics and planning tools run without torch);
detectron2 and torch are imported inside the functions that need them.
"""

import os
import re
import sys

__all__ = ["user_errors", "run_main", "run_cli", "setup_cfg", "parse_with_overrides", "PURPOSES", "count_arg"]

# What a tool does with its config (see setup_cfg): train (train_net.py), infer (tools/infer.py,
# the proposal dump, evaluation), read (tools that only read settings: planning, benchmarks).
PURPOSES = ("train", "infer", "read")


_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*$")  # SEED, MODEL.WEIGHTS, SNIPER.TEST.MODE, ...


def _is_config_key(token, roots):
    """A config key (``SEED``, ``SNIPER.TEST.MODE``): upper case, under one of ``roots`` (the
    config's top-level keys), and not an existing file (``TEST.JPG``)."""
    return bool(_CONFIG_KEY.match(token)) and token.split(".")[0] in roots and not os.path.exists(token)


def count_arg(minimum):
    """An argparse ``type`` for an integer option of at least ``minimum`` (argparse then refuses
    ``--epochs 0`` in its own one-line usage error)."""
    import argparse

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _config_roots():
    """The config's top-level keys: detectron2's sections, SEED, ..., and SNIPER."""
    from detectron2.config import get_cfg

    from .config import add_sniper_config

    cfg = get_cfg()
    add_sniper_config(cfg)
    return set(cfg.keys())


def parse_with_overrides(parser, argv=None):
    """``parser.parse_args`` for a parser whose last positional is ``opts`` (config overrides,
    ``nargs=argparse.REMAINDER``), also when the overrides directly follow an option that takes a
    list (``--json a.json b.json SNIPER.TEST.MODE full``: argparse alone would hand the overrides to
    ``--json``). Everything from the first config key on is an override: an upper-case token under
    one of the config's top-level sections (``SEED``, ``MODEL.WEIGHTS``, ``SNIPER.TEST.MODE``) that
    is not an existing file (an input named ``IMG_0001.JPG`` or ``TEST.JPG`` stays an input).

    Returns:
        argparse.Namespace with ``opts``: list of str, the overrides in order.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    roots = _config_roots() if any(_CONFIG_KEY.match(a) for a in argv) else set()  # --help: no detectron2
    first = next((i for i, a in enumerate(argv) if _is_config_key(a, roots)), len(argv))
    args = parser.parse_args(argv[:first])
    args.opts = list(args.opts or []) + argv[first:]
    return args


def user_errors():
    """Exception types that describe a problem with the user's inputs (config, data, files we wrote),
    each with a message naming the file and the problem.

    Numpy only: ``ImageReadError`` is among them once :mod:`sniper_d2.image_io` (Pillow) has been
    imported, which it must have been for one to be raised; so ``--help`` or a config error of a
    planning tool works without Pillow.
    """
    from .coco import DatasetError
    from .config_types import ConfigError
    from .io import ArtifactError

    # a path that is a file where a folder is needed, or the other way round, or not ours to write
    errors = (DatasetError, ArtifactError, ConfigError, FileNotFoundError, FileExistsError, NotADirectoryError,
              IsADirectoryError, PermissionError)
    image_io = sys.modules.get(__package__ + ".image_io")
    geo = sys.modules.get(__package__ + ".geo")  # GeoError: likewise, once sniper_d2.geo is imported
    return errors + ((image_io.ImageReadError,) if image_io is not None else ()) + \
        ((geo.GeoError,) if geo is not None else ())


def run_main(main_func, program, *args, **kwargs):
    """Call ``main_func(*args, **kwargs)``; a user error exits with ``<program>: error: <message>`` (status 1)."""
    try:
        return main_func(*args, **kwargs)
    except user_errors() as e:
        sys.exit(f"{program}: error: {e}")


def run_cli(main_func, args, program):
    """Run ``main_func(args)`` on ``args.num_gpus`` processes, the way train_net.py does.

    GPUs: detectron2's ``launch`` (NCCL). A CPU-only machine with ``--num-gpus N`` and ``--num-machines M``,
    N * M > 1: N CPU processes on each machine, all joined by gloo
    (:func:`sniper_d2.engine.launch_cpu`). Errors about the user's inputs end the program with one line
    ``<program>: error: <message>`` (exit status 1).

    Args:
        main_func (callable): ``main_func(args)``, run in every process.
        args (argparse.Namespace): with detectron2's ``default_argument_parser`` launch arguments
            (``num_gpus``, ``num_machines``, ``machine_rank``, ``dist_url``).
        program (str): the name printed before the error.
    """
    import torch
    from detectron2.engine import launch

    from .engine import launch_cpu

    num_machines, machine_rank = args.num_machines, args.machine_rank
    if args.num_gpus * num_machines > 1 and not torch.cuda.is_available():
        return run_main(launch_cpu, program, main_func, args.num_gpus, args.dist_url, (args,),
                        num_machines=num_machines, machine_rank=machine_rank)
    return run_main(launch, program, main_func, args.num_gpus, num_machines, machine_rank,
                    args.dist_url, (args,))


def _unknown_key_message(error):
    """What to tell the user about yacs' error for an unknown key (``KeyError("Non-existent config
    key: X")`` from a file, ``AssertionError("Non-existent key: X")`` from the command line): a key
    of :data:`sniper_d2.config.MOVED_KEYS` names the key to set instead."""
    from .config import MOVED_KEYS

    message = str(error.args[0] if error.args else error)
    match = re.search(r"Non-existent (?:config )?key: (\S+)", message)
    key = match.group(1) if match else None
    if key in MOVED_KEYS:
        return f"{key} is no longer a key: set detectron2's {MOVED_KEYS[key]} instead"
    return None


def _merged_cfg(config_file, opts):
    """detectron2 defaults + SNIPER keys + ``config_file`` + ``opts``, not frozen.

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ConfigError: a key of the file or of ``opts`` is unknown (names the file or the override,
            and the new name of a key that moved, :data:`sniper_d2.config.MOVED_KEYS`).
    """
    from detectron2.config import get_cfg

    from .config import add_sniper_config
    from .config_files import require_config_file
    from .config_types import ConfigError

    cfg = get_cfg()
    add_sniper_config(cfg)
    require_config_file(config_file)
    try:
        cfg.merge_from_file(config_file)
    except KeyError as e:  # yacs: "Non-existent config key: ..."
        raise ConfigError(f"{config_file}: " + (_unknown_key_message(e) or (
            f"unknown config key: {e.args[0] if e.args else e}; see sniper_d2/config.py for the SNIPER.* keys"))) from e
    try:
        cfg.merge_from_list(list(opts or []))
    except (KeyError, AssertionError) as e:  # yacs asserts on unknown keys given on the command line
        raise ConfigError("command-line config override: " + (_unknown_key_message(e) or str(
            e.args[0] if e.args else e))) from e
    return cfg


def _start_up_checks(cfg, purpose, config_file, opts, strict_data):
    """The one place where settings are checked before anything is printed: a wrong setting ends
    the program in one line, among the first the user sees.

    :func:`sniper_d2.config.check_runtime_config` (AMP without CUDA, for training);
    :func:`sniper_d2.config.schedule_follows_max_iter` (steps follow MAX_ITER; steps past it refused);
    :func:`sniper_d2.preflight.preflight` (data files, data sets registered, NUM_CLASSES against their
    categories, weights resolved to a local file).

    Returns:
        str or None: the schedule change to log, if any.
    """
    import torch

    from .config_checks import check_runtime_config, schedule_follows_max_iter
    from .preflight import preflight

    check_runtime_config(cfg, torch.cuda.is_available(), training=purpose == "train")
    note = schedule_follows_max_iter(cfg, config_file, opts)
    preflight(cfg, purpose, strict_data=strict_data)
    return note


def setup_cfg(config_file, opts=(), args=None, *, purpose="train"):
    """The config of a sniper_d2 tool, from a yaml file and ``KEY VALUE`` overrides.

    Args:
        config_file (str): detectron2 yaml config (``_BASE_`` chains allowed).
        opts (list[str]): command-line overrides, ``[KEY, VALUE, ...]``.
        args (argparse.Namespace or None): a training / evaluation process's arguments (detectron2's
            ``default_argument_parser``): given, the data sets of ``SNIPER.REGISTER_COCO`` must exist
            and are registered, and :func:`sniper_d2.preflight.default_setup` runs (output folder,
            loggers, environment and config dump to the log file only, seeds).
        purpose (str): one of :data:`PURPOSES`: "train" and "infer" run the start-up checks
            (:func:`_start_up_checks`: data files, class count, weights resolved to a local file,
            schedule) before anything is printed; "read" only merges the settings (planning,
            benchmarks). Without ``args`` (tools/infer.py on images), data sets whose json is
            missing are skipped rather than refused.

    Returns:
        CfgNode, frozen.

    Raises:
        FileNotFoundError: the config file, or the weights (``WeightsError``), is missing.
        ConfigError: an unknown key, or settings that cannot work (see :func:`_start_up_checks`).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    cfg = _merged_cfg(config_file, opts)
    schedule_note = None
    if purpose != "read":
        schedule_note = _start_up_checks(cfg, purpose, config_file, opts, strict_data=args is not None)
    cfg.freeze()
    if args is not None:
        import logging

        from .preflight import default_setup

        default_setup(cfg, args)  # environment and config dump: to OUTPUT_DIR/log.txt only
        if schedule_note:
            logging.getLogger("sniper_d2").info(schedule_note)
        if purpose == "read":
            from .data.datasets import register_datasets_from_cfg

            register_datasets_from_cfg(cfg)
    return cfg
