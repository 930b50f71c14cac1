"""Planning the chips in every training process: each plans its share, all gather the plan.

With several processes (GPUs, machines, or CPU processes joined by gloo), rank r plans the images
whose index is r modulo the world size (:func:`sniper_d2.plans.build_plan` with ``shard``), the
shares are exchanged with ``detectron2.utils.comm.all_gather`` and joined in the order of a
one-process plan (:func:`sniper_d2.plans.merge_plans`), so planning time falls with the number of
processes and every process holds the same plan as one process would build. Only rank 0 writes
the file (atomically). The planner itself stays numpy-only; torch.distributed is used only here.
"""

import logging

from detectron2.utils import comm

from ..plans import build_plan, load_matching_plan, load_or_build_plan, merge_plans, proposals_digest, save_plan

__all__ = ["load_or_build_plan_distributed"]

logger = logging.getLogger(__name__)


def load_or_build_plan_distributed(path, records, params, epochs, seed, num_workers=0, proposals=None,
                                   proposals_id=None, progress=True):
    """:func:`sniper_d2.plans.load_or_build_plan` for every process of a distributed run.

    Call it from all processes at once. Rank 0 decides whether the file at ``path`` matches; if it
    does, every process loads it; if not, every process plans its share of the images (with
    ``num_workers // processes on this machine`` worker processes of its own), the shares are
    gathered, and rank 0 saves the joined plan. With one process it is ``load_or_build_plan``.

    Args: as :func:`sniper_d2.plans.load_or_build_plan`.

    Returns:
        ChipPlan, the same in every process.
    """
    world, rank = comm.get_world_size(), comm.get_rank()
    if world == 1:
        return load_or_build_plan(path, records, params, epochs, seed, num_workers=num_workers,
                                  proposals=proposals, proposals_id=proposals_id, progress=progress)
    if proposals_id is None:
        proposals_id = proposals_digest(proposals)
    plan = load_matching_plan(path, records, params, epochs, seed, proposals_id) if rank == 0 else None
    if comm.all_gather(plan is not None)[0]:  # rank 0's verdict, for everyone
        if rank != 0:
            plan = load_or_build_plan(path, records, params, epochs, seed, num_workers=0, proposals=proposals,
                                      proposals_id=proposals_id, progress=False)
        return plan
    workers = num_workers // comm.get_local_size()
    logger.info(f"planning chips in {world} processes: this one (rank {rank}) plans images {rank}, "
                f"{rank + world}, ... ({len(range(rank, len(records), world))} of {len(records)})"
                f"{f' with {workers} workers' if workers else ''}")
    share = build_plan(records, params, epochs, seed, num_workers=workers, proposals=proposals,
                       proposals_id=proposals_id, progress=progress and rank == 0, shard=(rank, world))
    plan = merge_plans(comm.all_gather(share))
    if rank == 0:
        save_plan(path, plan, params=params, seed=seed)
        logger.info(f"saved chip plan {path}: {len(plan)} chips over {epochs} epochs")
    comm.synchronize()  # the file is complete before anyone goes on
    return plan
