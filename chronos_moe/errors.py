"""The errors of checkpoint reading, which both `chronos_moe.checkpoints` and
`chronos_moe.safetensors_reader` raise. Each area has one family: data
(`chronos_moe.data.DataError`), configs (`chronos_moe.ConfigError`), training
runs (`chronos_moe.training.errors`), training checkpoints
(`chronos_moe.training.checkpoint.CheckpointCorrupt` and its siblings).
"""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing files, a foreign config, or
    weights that do not match the config."""


class DistributionError(ValueError):
    """A multi-device layout that cannot be used (`chronos_moe.distribution`),
    raised before training starts; each case below has its own class."""


class DistributionBackendError(DistributionError):
    """`keras.distribution` asked for on a backend that has none (torch)."""


class MeshSizeError(DistributionError):
    """A device mesh that needs more devices than are present."""


class IndivisibleExpertsError(DistributionError):
    """An expert axis whose size does not divide `num_experts`."""


class IndivisibleBatchError(DistributionError):
    """A data-parallel axis whose size does not divide the global batch."""


class UnmatchedExpertVariableError(DistributionError):
    """An expert weight that no rule of the layout map shards (it would stay
    replicated on every device, silently)."""


class BuiltBeforeDistributionError(DistributionError):
    """Model variables created before the distribution was set: they are not
    laid out on its device mesh."""


class ProcessSettingsError(DistributionError):
    """Multi-process (multi-host) settings that cannot start a run: a
    `num_processes` without a `coordinator_address`, a `process_id` outside
    `[0, num_processes)` or without `num_processes`."""


class ProcessMeshError(DistributionError):
    """A device mesh that does not suit the processes of a multi-host run: it
    leaves some process' devices out, or one data-parallel replica's devices
    lie in more than one process."""
