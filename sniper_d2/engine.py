"""Multi-process training on CPU (gloo), next to detectron2's CUDA-only launch.

detectron2 0.6's ``launch`` asserts CUDA and uses NCCL, and its ``create_ddp_model`` passes
``device_ids=[local_rank]``, which DistributedDataParallel rejects for a CPU module. We keep the real
``launch`` for GPUs and add:

- :func:`launch_cpu`: spawns N processes with a gloo process group (and detectron2's local group);
- :func:`create_ddp_model`: like detectron2's, with ``device_ids=None`` for CPU models;
- :func:`install_cpu_ddp_support`: makes ``DefaultTrainer`` use it (it calls the module-level name).

:func:`sniper_d2.cli.run_cli` picks between ``launch`` and :func:`launch_cpu`.
"""

import gc
import logging

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import defaults as d2_defaults
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

__all__ = ["launch_cpu", "create_ddp_model", "install_cpu_ddp_support"]

logger = logging.getLogger(__name__)
_d2_create_ddp_model = d2_defaults.create_ddp_model


def create_ddp_model(model, *, fp16_compression=False, **kwargs):
    """detectron2's ``create_ddp_model``, except that CPU models get ``device_ids=None``."""
    if comm.get_world_size() == 1:
        return model
    if next(model.parameters()).device.type == "cpu":
        return DistributedDataParallel(model, device_ids=None, **kwargs)
    return _d2_create_ddp_model(model, fp16_compression=fp16_compression, **kwargs)


def install_cpu_ddp_support():
    """Route ``DefaultTrainer``'s DDP wrapping through :func:`create_ddp_model` (idempotent)."""
    d2_defaults.create_ddp_model = create_ddp_model


def _cpu_worker(rank, main_func, world_size, dist_url, args):
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=rank)
    # One machine: the local group is everyone (detectron2's comm.get_local_rank() reads it).
    comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))
    install_cpu_ddp_support()
    torch.set_num_threads(max(1, torch.get_num_threads() // world_size))
    try:
        main_func(*args)
        dist.barrier()  # leave together: rank 0 may still be evaluating after the gather
    finally:
        _destroy_process_groups()


def _destroy_process_groups():
    """Destroy the gloo groups and drop every reference to them before the interpreter exits.

    detectron2 keeps groups alive in ``comm._LOCAL_PROCESS_GROUP`` and in the ``lru_cache`` of
    ``comm._get_global_gloo_group``. A group destroyed by ``dist.destroy_process_group`` but still
    referenced there is freed during interpreter shutdown, and its gloo threads then abort the process
    ("terminate called without an active exception", SIGABRT) in about 1 run in 20.
    """
    dist.destroy_process_group()
    comm._LOCAL_PROCESS_GROUP = None
    comm._get_global_gloo_group.cache_clear()
    gc.collect()


def launch_cpu(main_func, num_processes, dist_url="tcp://127.0.0.1:29511", args=()):
    """Run ``main_func(*args)`` in ``num_processes`` CPU processes joined by a gloo group."""
    if num_processes <= 1:
        return main_func(*args)
    logger.info(f"launching {num_processes} CPU processes (gloo) at {dist_url}")
    mp.start_processes(_cpu_worker, nprocs=num_processes, args=(main_func, num_processes, dist_url, args),
                       daemon=False, start_method="spawn")

