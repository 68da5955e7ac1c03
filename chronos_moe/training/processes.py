"""The processes and devices of a training run: the backend the config asks
for (`check_backend`), the torch processes under `torchrun`
or of a multi-host JAX run (`start_processes`, `on_rank_zero`) and the JAX
device mesh (`mesh_distribution`), each checked before anything is read."""

from __future__ import annotations

from chronos_moe import backend, distribution
from chronos_moe.errors import DistributionBackendError, IndivisibleBatchError
from chronos_moe.training.config import TrainingConfig
from chronos_moe.training.errors import RunError
from chronos_moe.validation import cluster_settings


def mesh_distribution(config: TrainingConfig, processes: int):
    """The `keras.distribution` of `config.distribution` (`None` without one,
    unless JAX runs several processes): a named error on torch, when the mesh
    needs more devices than are present, or when it does not suit the
    `processes` of a multi-host run (`ProcessMeshError`: it must span them
    all, whole replicas per process)."""
    # (torch's processes under torchrun are replicas without a mesh.)
    if config.mesh_shape is None and (processes == 1 or not backend.KERAS_DISTRIBUTION):
        return None
    mesh = distribution.expert_distribution(
        *(config.mesh_shape or (1, 1)),
        num_experts=config.num_experts if config.use_moe else None,
        batch_size=config.per_device_train_batch_size,
    )
    if processes > 1:
        distribution.check_processes(mesh.device_mesh)
        # Each process reads its own rows already (`ChronosDataset.shard`); Keras'
        # auto-sharding would split only a tf.data stream, and refuses any other.
        mesh.auto_shard_dataset = False
    return mesh


def start_processes(config: TrainingConfig) -> tuple[int, int]:
    """`(index, count)` of this process: a torch process group under
    `torchrun` (started from its environment), the processes of a multi-host
    JAX run (`distribution`'s process keys or Keras' `KERAS_DISTRIBUTION_*`
    variables, see `chronos_moe.validation.cluster_settings`), else `(0, 1)`.
    Named errors before anything is read: bad multi-host settings
    (`ProcessSettingsError`), `distribution` (the JAX mesh) set under
    torchrun, a process count that does not divide the global batch."""
    cluster = None
    if backend.KERAS_DISTRIBUTION:
        cluster = cluster_settings(config.distribution, config.per_device_train_batch_size)
    if not backend.initialize_processes(cluster):
        return 0, 1
    count = backend.process_count()
    if config.distribution is not None and not backend.KERAS_DISTRIBUTION:
        raise DistributionBackendError(
            "`distribution` is the JAX device mesh (keras.distribution); under torchrun the "
            f"{count} processes are the data-parallel replicas already. Remove `distribution` "
            "from the config, or run it with --backend jax without torchrun. "
            f"Received: distribution={config.distribution}, processes={count}"
        )
    if config.per_device_train_batch_size % count:
        raise IndivisibleBatchError(
            "The number of processes (torchrun's, or a multi-host run's) must divide the "
            "global batch (`per_device_train_batch_size`): each takes batch / processes "
            f"series of every step. Received: processes={count}, "
            f"per_device_train_batch_size={config.per_device_train_batch_size}"
        )
    return backend.process_index(), count


def on_rank_zero(function, *args):
    """`function(*args)` on rank 0, its result (or its error, as a `RunError`)
    on every rank: one process decides, and nothing races."""
    result, error = None, None
    if backend.process_index() == 0:
        try:
            result = function(*args)
        except Exception as raised:  # handed to the other ranks, then raised here
            error = raised
    failure = backend.broadcast_object(None if error is None else f"{error}")
    if error is not None:
        raise error
    if failure is not None:
        raise RunError(f"rank 0 stopped the run: {failure}")
    return backend.broadcast_object(result)


def check_backend(config: TrainingConfig) -> None:
    """A `RunError` when the config asks for another backend than Keras runs on."""
    if config.backend is not None and config.backend != backend.BACKEND:
        raise RunError(
            f"The config asks for backend {config.backend!r}, but Keras runs on "
            f"{backend.BACKEND!r}. Run `chronos-moe train --backend {config.backend}`, or set "
            f"KERAS_BACKEND={config.backend} before Keras is imported. "
            f"Received: backend={config.backend!r}"
        )
