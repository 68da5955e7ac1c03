"""Data-parallel training on torch: one process per device under `torchrun`
(part of `chronos_moe.backend.torch`).

Released Keras (3.15) has no `DistributedDataParallel` inside its torch
trainer, and wrapping the model in `torch.nn.parallel.DistributedDataParallel`
would bypass `fit`'s `train_step` (and the guarantees' callbacks around it).
So `fit` runs unchanged in every process and two hooks make its step a
data-parallel one (`data_parallel`):

* **global statistics**: while a training step runs, `global_sum` returns the
  sum of a tensor over all ranks, through an all-reduce that autograd sees
  (its backward all-reduces the incoming gradient too, as `SyncBatchNorm`
  does). The losses' means (the token cross-entropy over the valid labels, the
  balance loss' `f` and `P`, the z-loss), the router's batch-norm statistics,
  the routers' expert loads and the utilisation metric are then the global
  batch's: the same values on every rank, and each rank's backward pass
  carries every rank's share of the gradient of that one global loss;
* **gradient all-reduce**: `optimizer.apply` receives, on every rank, the
  rank-average of the gradients (flattened into buckets of `BUCKET_ELEMENTS`,
  one `all_reduce` each), which is the one-process gradient of the global
  batch: clipping and AdamW then make the same update everywhere.

Averaging per-rank losses instead (what DDP alone gives) would weigh the
ranks' tokens differently when they hold different numbers of ignored labels
(`-100`), and would leave the balance statistics and the router's batch norm
per rank (their moving values drifting apart between ranks).

The process group starts from `torchrun`'s environment (`RANK`, `WORLD_SIZE`,
`MASTER_ADDR`, `MASTER_PORT`, `LOCAL_RANK`): NCCL on CUDA (each process on
device `LOCAL_RANK`), gloo on the CPU.

Example (one process: every hook is the identity):

>>> import keras
>>> from chronos_moe.backend import torch_ddp
>>> torch_ddp.process_index(), torch_ddp.process_count()
(0, 1)
>>> float(torch_ddp.global_sum(keras.ops.convert_to_tensor(2.0)))
2.0
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
from typing import Any

import keras
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_functional

# Gradient elements per all-reduce: big enough that a call's latency does not
# dominate, small enough that the flat copy stays a fraction of the gradients.
BUCKET_ELEMENTS = 1 << 24
# How long a collective waits for the other ranks (a killed rank ends the run
# through torchrun well before).
TIMEOUT = datetime.timedelta(minutes=30)

_collecting = False  # inside a training step of a process group of 2+ ranks


def initialize_processes(cluster: dict[str, Any] | None = None) -> bool:
    """Starts the process group from `torchrun`'s environment (once), when
    `WORLD_SIZE` > 1. Returns whether this process is one of several.
    (`cluster`, JAX's multi-host settings, is not read: torchrun's
    environment says it all.)"""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)
    return True


def process_index() -> int:
    """This process' rank (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def process_count() -> int:
    """The number of processes training together (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def global_sum(x: Any) -> Any:
    """`x` summed over the ranks inside a data-parallel training step; `x`
    itself elsewhere. Differentiable: the backward pass sums the gradient over
    the ranks too, so each rank's gradient is the global loss' times the
    number of ranks, which `all_reduce_gradients` averages away."""
    if not _collecting:
        return x
    return distributed_functional.all_reduce(keras.ops.convert_to_tensor(x))


def all_reduce_gradients(gradients: list[Any], variables: list[Any]) -> list[Any]:
    """Averages `gradients` over the ranks in place (flattened per dtype into
    buckets of `BUCKET_ELEMENTS`, one `all_reduce` each). A gradient that is
    `None` on some ranks only (a weight their rows did not reach) counts as
    zeros there; `None` on every rank stays `None`, as in one process."""
    missing = torch.tensor(
        [g is None for g in gradients], dtype=torch.int32, device=variables[0].value.device
    )
    dist.all_reduce(missing)  # on how many ranks each gradient is None
    gradients = [
        torch.zeros_like(v.value) if g is None and int(n) < process_count() else g
        for g, v, n in zip(gradients, variables, missing.tolist(), strict=True)
    ]
    present = [g for g in gradients if g is not None]
    buckets: dict[Any, list[list[Any]]] = {}
    for gradient in present:
        groups = buckets.setdefault(gradient.dtype, [[]])
        if groups[-1] and sum(g.numel() for g in groups[-1]) + gradient.numel() > BUCKET_ELEMENTS:
            groups.append([])
        groups[-1].append(gradient)
    for groups in buckets.values():
        for group in groups:
            flat = torch.cat([g.reshape(-1) for g in group])
            dist.all_reduce(flat)
            flat /= process_count()
            offset = 0
            for gradient in group:
                gradient.copy_(flat[offset : offset + gradient.numel()].view_as(gradient))
                offset += gradient.numel()
    return gradients


@contextlib.contextmanager
def _collecting_statistics():
    global _collecting
    previous, _collecting = _collecting, True
    try:
        yield
    finally:
        _collecting = previous


def data_parallel(model: keras.Model) -> None:
    """Makes `model.fit`'s training step data parallel over the process group
    (a no-op in a single process): the model's variables are broadcast from
    rank 0, its `train_step` takes the losses' statistics over all ranks, and
    its optimizer's `apply` averages the gradients over them first. Call it once,
    after `compile`."""
    if process_count() == 1:
        return
    with torch.no_grad():
        for variable in model.variables:
            dist.broadcast(variable.value.data, src=0)
    # Dropout draws from torch's global generator, equal on every rank here (the
    # same seed, the same model): each rank moves to its own stream, else all
    # would drop the same positions of their rows. (Checkpoints keep each rank's.)
    torch.manual_seed(int(torch.randint(0, 2**62, ())) + process_index())
    train_step = model.train_step

    @functools.wraps(train_step)
    def data_parallel_step(data):
        with _collecting_statistics():
            return train_step(data)

    apply = model.optimizer.apply

    @functools.wraps(apply)
    def apply_averaged(gradients, trainable_variables=None):
        variables = trainable_variables or model.trainable_variables
        return apply(all_reduce_gradients(list(gradients), list(variables)), variables)

    model.train_step = data_parallel_step
    model.optimizer.apply = apply_averaged


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` (any picklable object), on every rank."""
    if process_count() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def all_objects(value: Any) -> list[Any]:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if process_count() == 1:
        return [value]
    values: list[Any] = [None] * process_count()
    dist.all_gather_object(values, value)
    return values


def any_process(flag: bool) -> bool:
    """Whether `flag` is true on any rank (`flag` itself in a single process)."""
    if process_count() == 1:
        return flag
    value = torch.tensor([int(flag)], device=keras.ops.convert_to_tensor(0).device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    """Waits for every rank (no-op in a single process)."""
    if process_count() > 1:
        dist.barrier()


def shutdown_processes() -> None:
    """Ends the process group (no-op without one)."""
    if dist.is_initialized():
        dist.destroy_process_group()
