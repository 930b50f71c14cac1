"""Multi-process training on CPU (gloo), next to detectron2's CUDA-only launch.

detectron2 0.6's ``launch`` asserts CUDA and uses NCCL, and its ``create_ddp_model`` passes
``device_ids=[local_rank]``, which DistributedDataParallel rejects for a CPU module. We keep the real
``launch`` for GPUs and add:

- :func:`launch_cpu`: spawns N processes per machine, on one or several machines, with a gloo process
  group (and detectron2's per-machine local group), as detectron2's ``launch`` does with NCCL;
- :func:`free_local_dist_url`: a ``tcp://127.0.0.1:<port>`` address on a port free now;
- :func:`create_ddp_model`: like detectron2's, with ``device_ids=None`` for CPU models;
- :func:`install_cpu_ddp_support`: makes ``DefaultTrainer`` use it (it calls the module-level name).

:func:`sniper_d2.cli.run_cli` picks between ``launch`` and :func:`launch_cpu`.
"""

import gc
import logging
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import defaults as d2_defaults
from detectron2.utils import comm
from torch.nn.parallel import DistributedDataParallel

__all__ = ["launch_cpu", "free_local_dist_url", "create_ddp_model", "install_cpu_ddp_support"]

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


def _cpu_worker(local_rank, main_func, num_per_machine, num_machines, machine_rank, dist_url, args):
    world_size = num_per_machine * num_machines
    rank = machine_rank * num_per_machine + local_rank
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size, rank=rank)
    # detectron2's comm.get_local_rank() / get_local_size() read the group of this machine's processes;
    # every process creates every machine's group, in the same order (new_group is collective).
    for i in range(num_machines):
        group = dist.new_group(list(range(i * num_per_machine, (i + 1) * num_per_machine)))
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group
    install_cpu_ddp_support()
    torch.set_num_threads(max(1, torch.get_num_threads() // num_per_machine))
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


def free_local_dist_url():
    """``tcp://127.0.0.1:<port>`` on a port that is free now (the system picks it: a socket bound to
    port 0), for a process group of one machine. Another program may take the port before the group
    binds it; the group then fails to start, naming the address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def launch_cpu(main_func, num_processes, dist_url="tcp://127.0.0.1:29511", args=(), *, num_machines=1,
               machine_rank=0):
    """Run ``main_func(*args)`` in ``num_processes`` CPU processes on this machine, joined by a gloo
    group with the processes of the other machines (``num_machines`` in all, this one being
    ``machine_rank``; every machine runs the same command with its own rank and the same ``dist_url``,
    the address of machine 0). Global rank = ``machine_rank * num_processes + local rank``, as in
    detectron2's ``launch``."""
    if num_processes * num_machines <= 1:
        return main_func(*args)
    logger.info(f"launching {num_processes} CPU processes (gloo) on machine {machine_rank} of {num_machines} "
                f"at {dist_url}")
    mp.start_processes(_cpu_worker, nprocs=num_processes,
                       args=(main_func, num_processes, num_machines, machine_rank, dist_url, args),
                       daemon=False, start_method="spawn")
