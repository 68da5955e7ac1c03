"""The errors of checkpoint reading, which both `chronos_moe.checkpoints` and
`chronos_moe.safetensors_reader` raise. Each area has one family: data
(`chronos_moe.data.DataError`), configs (`chronos_moe.ConfigError`), training
runs (`chronos_moe.training.errors`), training checkpoints
(`chronos_moe.training.checkpoint.CheckpointCorrupt` and its siblings).
"""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read: missing files, a foreign config, or
    weights that do not match the config."""
