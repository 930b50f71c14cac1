"""Multi-process training on CPU (gloo), next to detectron2's CUDA-only launch.

detectron2 0.6's ``launch`` asserts CUDA and uses NCCL, and its ``create_ddp_model`` passes
``device_ids=[local_rank]``, which DistributedDataParallel rejects for a CPU module. We keep the real
``launch`` for GPUs and add:

- :func:`launch_cpu`: spawns N processes on this machine, joined by a gloo process group with the
  processes of the other machines (one or several, as detectron2's ``launch`` does with NCCL);
- :func:`free_local_dist_url`: a ``tcp://127.0.0.1:<port>`` address on a port free now;
- :func:`create_ddp_model`: like detectron2's, with ``device_ids=None`` for CPU models;
- :func:`install_cpu_ddp_support`: makes ``DefaultTrainer`` use it. detectron2 0.6 has no public
  way to choose the DDP wrapper of ``DefaultTrainer`` (its ``__init__`` calls the module-level
  ``create_ddp_model``), so this rebinds that public name, in the CPU worker processes only.

Only public ``detectron2.utils.comm`` functions are used. Its local process group is not created:
on one machine ``comm.get_local_size()`` is then the world size, as it should be, and
``comm.get_local_rank()`` is only read by detectron2's ``create_ddp_model``, which CPU models do not
go through.

:func:`sniper_d2.cli.run_cli` picks between ``launch`` and :func:`launch_cpu`.
"""

import logging
import os
import socket
import sys

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


# Exit status of a worker that stopped on a user error (sniper_d2.cli.user_errors).
USER_ERROR_EXIT = 3


def _cpu_worker(local_rank, main_func, num_per_machine, num_machines, machine_rank, dist_url, args,
                user_error_queue):
    from .cli import user_errors

    rank = machine_rank * num_per_machine + local_rank  # as detectron2's launch numbers them
    dist.init_process_group(backend="gloo", init_method=dist_url, world_size=num_per_machine * num_machines,
                            rank=rank)
    install_cpu_ddp_support()
    torch.set_num_threads(max(1, torch.get_num_threads() // num_per_machine))
    try:
        main_func(*args)  # another exception goes to the parent through torch.multiprocessing
    except user_errors() as e:  # the parent prints it in one line (sys.argv is the parent's)
        user_error_queue.put(f"{os.path.basename(sys.argv[0])}: error: {e}")
        os._exit(USER_ERROR_EXIT)
    dist.barrier()  # leave together: rank 0 may still be evaluating after the gather
    dist.destroy_process_group()
    _exit_now()


def _exit_now():
    """End a finished worker process without the interpreter's teardown (logs and streams flushed).

    detectron2's ``comm`` keeps the world group in a cache that has no public way to be cleared
    (``comm.all_gather`` / ``comm.gather`` fill it). A destroyed gloo group still referenced there is
    freed during interpreter shutdown, and its threads then abort the process ("terminate called
    without an active exception", SIGABRT, about 1 run in 20). A worker has nothing left to do at
    this point, so it leaves before that teardown.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


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
    ``machine_rank``; every machine runs the same command with its own rank and the same
    ``dist_url``, the address of machine 0). Global rank = ``machine_rank * num_processes + local
    rank``, as in detectron2's ``launch``.

    A user error (:func:`sniper_d2.cli.user_errors`) in a worker ends the program with one line,
    ``<program>: error: <message>``, and status 1, as in one process.
    """
    if num_processes * num_machines <= 1:
        return main_func(*args)
    logger.info(f"launching {num_processes} CPU processes (gloo) on machine {machine_rank} of {num_machines} "
                f"at {dist_url}")
    user_errors = mp.get_context("spawn").SimpleQueue()
    try:
        mp.start_processes(_cpu_worker, nprocs=num_processes,
                           args=(main_func, num_processes, num_machines, machine_rank, dist_url, args, user_errors),
                           daemon=False, start_method="spawn")
    except mp.ProcessExitedException as e:
        if e.exit_code == USER_ERROR_EXIT and not user_errors.empty():
            sys.exit(user_errors.get())  # the first worker's line; status 1, as in one process
        raise
