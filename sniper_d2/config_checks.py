"""Checks and one rewrite of a merged config, applied by :func:`sniper_d2.cli.setup_cfg` before
anything heavy runs: settings that detectron2 would reject only deep inside training, and
``SOLVER.STEPS`` that follow ``SOLVER.MAX_ITER``.
"""

import ast

import yaml

from .config_files import config_chain
from .config_types import ConfigError

__all__ = ["check_runtime_config", "schedule_follows_max_iter"]


def check_runtime_config(cfg, cuda_available, training=True):
    """Refuse settings that detectron2 would only reject deep inside training.

    Args:
        cfg (CfgNode): the merged config. cuda_available (bool): ``torch.cuda.is_available()``.
        training (bool): the config is used to train (False: inference only, which never uses AMP).

    Raises:
        ConfigError: training with ``SOLVER.AMP.ENABLED`` without a CUDA device (detectron2's
            AMPTrainer uses CUDA autocast and asserts CUDA on its first step).
    """
    if training and cfg.SOLVER.AMP.ENABLED and not (cuda_available and str(cfg.MODEL.DEVICE).startswith("cuda")):
        raise ConfigError(f"SOLVER.AMP.ENABLED needs a CUDA device, but MODEL.DEVICE is {cfg.MODEL.DEVICE!r}"
                          f"{'' if cuda_available else ' and no GPU is available'}: set SOLVER.AMP.ENABLED False")


def schedule_follows_max_iter(cfg, config_file, opts):
    """Make ``SOLVER.STEPS`` follow ``SOLVER.MAX_ITER``, and refuse steps at or past the end.

    When ``SOLVER.MAX_ITER`` is changed without ``SOLVER.STEPS``, on the command line (``opts``) or
    in a config file over its ``_BASE_``, the steps it came with are scaled by ``new MAX_ITER / old
    MAX_ITER`` (``STEPS: (240, 280)`` of 300 iterations become ``(960, 1120)`` for ``MAX_ITER
    1200``). Steps given next to MAX_ITER (same file, or on the command line) are kept as given.
    detectron2's own defaults (no MAX_ITER/STEPS in any file) are left alone.

    Args:
        cfg (CfgNode): the merged config (modified in place; not frozen).
        config_file (str): the top config file. opts (list[str]): the command-line KEY VALUE pairs.

    Returns:
        str or None: what was changed, for the log.

    Raises:
        ConfigError: a step at or past ``SOLVER.MAX_ITER`` (detectron2 would drop it silently).
    """
    keys = set(opts[0::2]) if opts else set()
    changed = None
    if "SOLVER.STEPS" not in keys:
        file_max, file_steps = _file_schedule(config_file)
        if file_max and file_steps is not None:
            new = _scale(file_steps, file_max, cfg.SOLVER.MAX_ITER)
            if tuple(new) != tuple(cfg.SOLVER.STEPS):
                changed = (f"SOLVER.STEPS {tuple(cfg.SOLVER.STEPS)} follow SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER}: "
                           f"now {new} (steps given only for another MAX_ITER are scaled with it)")
                cfg.SOLVER.STEPS = new
    late = [s for s in cfg.SOLVER.STEPS if s >= cfg.SOLVER.MAX_ITER]
    if late:
        raise ConfigError(f"SOLVER.STEPS {tuple(cfg.SOLVER.STEPS)} has steps at or past SOLVER.MAX_ITER "
                          f"{cfg.SOLVER.MAX_ITER}: give SOLVER.STEPS inside the schedule, or change only MAX_ITER "
                          f"and let the steps follow")
    return changed


def _scale(steps, old_max, new_max):
    """Steps of an ``old_max`` schedule for a ``new_max`` one; steps that would land at or past the
    end of a very short schedule are left out (no LR drop there)."""
    scaled = (int(round(s * float(new_max) / float(old_max))) for s in steps)
    return tuple(sorted({s for s in scaled if 0 < s < new_max}))


def _file_schedule(config_file):
    """(MAX_ITER, STEPS) a config file's ``_BASE_`` chain gives, with the rule applied file by file,
    bases first: a file that sets MAX_ITER without STEPS scales the steps of what it inherits.
    (None, None) when no file sets them."""
    max_iter, steps = None, None
    for path in config_chain(config_file):
        with open(path) as f:
            solver = (yaml.safe_load(f) or {}).get("SOLVER") or {}
        new_max = solver.get("MAX_ITER", max_iter)
        if "STEPS" in solver:
            given = solver["STEPS"]
            steps = tuple(int(x) for x in (ast.literal_eval(given) if isinstance(given, str) else given))
        elif steps is not None and max_iter and new_max:
            steps = _scale(steps, max_iter, new_max)
        max_iter = new_max
    return max_iter, steps
