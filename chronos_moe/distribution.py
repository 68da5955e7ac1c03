"""Data- and expert-parallel training on JAX with `keras.distribution`.

A `("batch", "expert")` device mesh of `data_parallel × expert_parallel`
devices. Every batch is split over the `"batch"` axis. The expert weights of
both MoE levels — `MoEExpertHead`'s `up`, `down`, `head` (series level) and
`TokenExperts`' `wi` (or `wi_0`, `wi_1`) and `wo` (token level), each
`(num_experts, …)` — are split over the `"expert"` axis on their leading
dimension, so each device of that axis holds `num_experts / expert_parallel`
whole experts; every other variable (the dense T5, the routers, the balance
statistics) is replicated. The optimizer's slots (AdamW's two moments) take
the layout of their variable. `expert_parallel=1` is plain data parallelism.

The mesh may span the devices of several processes (hosts) once they have
joined (`keras.distribution.initialize`, which `chronos-moe train` calls from
`chronos_moe.validation.cluster_settings`); `check_processes` then checks
that each process holds whole data-parallel replicas, so that each can feed
its own slice of the global batch.

Keras' layout map matches variable paths by regular expression and silently
replicates a variable that no rule matches; `check_expert_sharding` (which
`ChronosMoE` runs once built, whenever a distribution is set) refuses that, and
refuses variables created before the distribution was set. Only JAX has
`keras.distribution` in released Keras; torch scales out with
`torch.nn.parallel.DistributedDataParallel` under `torchrun` instead.

Example (on one device the mesh is `1 × 1`; with `JAX_NUM_CPU_DEVICES=8`,
`distribute(data_parallel=4, expert_parallel=2)` splits the same model):

>>> import keras
>>> from chronos_moe import ChronosT5, build_moe_chronos
>>> from chronos_moe.distribution import distribute
>>> distribution = distribute(data_parallel=1, expert_parallel=1, num_experts=4)
>>> base = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1)
>>> moe = build_moe_chronos(base, num_experts=4, top_k=2)  # checked: experts on "expert"
>>> distribution.get_variable_layout(moe.experts.head).axes
('expert', None, None)
>>> keras.distribution.set_distribution(None)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras

from chronos_moe import backend
from chronos_moe.errors import (
    BuiltBeforeDistributionError,
    DistributionBackendError,
    MeshSizeError,
    UnmatchedExpertVariableError,
)
from chronos_moe.layers.common import sublayers
from chronos_moe.moe.experts import MoEExpertHead
from chronos_moe.moe.token_experts import TokenExperts
from chronos_moe.validation import check_mesh_shape, check_process_mesh

BATCH_AXIS = "batch"
EXPERT_AXIS = "expert"
# Variable path (a regular expression matched against the whole path) -> the
# layout of every weight with a leading expert axis. The paths end in the
# layers' names, which `ChronosMoE` and `with_token_experts` set.
EXPERT_RULES = {
    r"(?:.*/)?experts/(?:up|down|head)": (EXPERT_AXIS, None, None),  # MoEExpertHead
    r"(?:.*/)?feed_forward/(?:wi|wi_0|wi_1|wo)": (EXPERT_AXIS, None, None),  # TokenExperts
}


def require_keras_distribution() -> None:
    """A `DistributionBackendError` unless the backend has `keras.distribution`."""
    if not backend.KERAS_DISTRIBUTION:
        raise DistributionBackendError(
            "`distribution` (a data- and expert-parallel device mesh) uses keras.distribution, "
            "which released Keras implements for JAX only. Run with KERAS_BACKEND=jax (or "
            "`--backend jax`), or train on torch with DistributedDataParallel under torchrun. "
            f"Received: backend={backend.BACKEND!r}"
        )


def device_mesh(
    data_parallel: int = 1,
    expert_parallel: int = 1,
    num_experts: int | None = None,
    batch_size: int | None = None,
) -> keras.distribution.DeviceMesh:
    """The `("batch", "expert")` mesh of `data_parallel × expert_parallel`
    devices (the first ones of `keras.distribution.list_devices()`).

    Named errors (`chronos_moe.errors`): `DistributionBackendError` on torch,
    `MeshSizeError` when fewer devices are present, `IndivisibleExpertsError`
    when `expert_parallel` does not divide `num_experts`,
    `IndivisibleBatchError` when `data_parallel` does not divide `batch_size`
    (the last two checked when given).

    Example:

    >>> device_mesh(1, 1)
    <DeviceMesh shape=(1, 1), axis_names=('batch', 'expert')>
    """
    require_keras_distribution()
    data_parallel, expert_parallel = check_mesh_shape(
        data_parallel, expert_parallel, num_experts, batch_size
    )
    devices = keras.distribution.list_devices()
    size = data_parallel * expert_parallel
    if size > len(devices):
        raise MeshSizeError(
            f"A mesh of data_parallel × expert_parallel = {size} devices needs as many; "
            f"{len(devices)} are present ({', '.join(devices[:4])}"
            f"{', …' if len(devices) > 4 else ''}). On CPU, simulate more with "
            "JAX_NUM_CPU_DEVICES=8 set before JAX starts. Received: "
            f"data_parallel={data_parallel}, expert_parallel={expert_parallel}"
        )
    return keras.distribution.DeviceMesh(
        (data_parallel, expert_parallel), (BATCH_AXIS, EXPERT_AXIS), devices[:size]
    )


def check_processes(mesh: keras.distribution.DeviceMesh) -> None:
    """Checks that `mesh` suits the processes of a multi-host run
    (`chronos_moe.validation.check_process_mesh`: every process' devices in
    it, whole data-parallel replicas per process, in process order), else a
    `ProcessMeshError`. No-op in one process.

    Example:

    >>> check_processes(device_mesh(1, 1))
    """
    processes = backend.process_count()
    if processes == 1:
        return
    owners = [[device.process_index for device in row] for row in mesh.backend_mesh.devices]
    check_process_mesh(owners, processes)


@contextlib.contextmanager
def process_local() -> Iterator[None]:
    """No global distribution inside (the one set is restored after): for work
    that one process of a multi-host run does alone. Keras' `model.save`
    builds a throwaway optimizer, whose variables a distribution would lay
    out on the global mesh — a collective the other processes never join.
    The model's own variables keep their layout."""
    previous = keras.distribution.distribution() if backend.KERAS_DISTRIBUTION else None
    if previous is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def expert_layout_map(mesh: keras.distribution.DeviceMesh) -> keras.distribution.LayoutMap:
    """The layout map of `EXPERT_RULES` on `mesh`: expert weights split on
    the expert axis, everything it does not name replicated.

    Example:

    >>> layout_map = expert_layout_map(device_mesh(1, 1))
    >>> layout_map["chronos_mo_e/experts/head"].axes
    ('expert', None, None)
    >>> layout_map["chronos_t5/encoder_block_0/feed_forward/wi/kernel"] is None
    True
    """
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes in EXPERT_RULES.items():
        layout_map[pattern] = axes
    return layout_map


def expert_distribution(
    data_parallel: int = 1,
    expert_parallel: int = 1,
    num_experts: int | None = None,
    batch_size: int | None = None,
) -> keras.distribution.ModelParallel:
    """The `keras.distribution.ModelParallel` of `device_mesh` and
    `expert_layout_map`, batches split on the `"batch"` axis; not set (use
    it as `with distribution.scope(): …`, or call `distribute`). Errors as
    `device_mesh`."""
    mesh = device_mesh(data_parallel, expert_parallel, num_experts, batch_size)
    return keras.distribution.ModelParallel(
        layout_map=expert_layout_map(mesh), batch_dim_name=BATCH_AXIS
    )


def distribute(
    data_parallel: int = 1,
    expert_parallel: int = 1,
    num_experts: int | None = None,
    batch_size: int | None = None,
) -> keras.distribution.ModelParallel:
    """Sets `expert_distribution(...)` as Keras' global distribution and
    returns it. Call it before the model is built (`ChronosT5.from_preset`,
    `build_moe_chronos`, `load_chronos`): variables take their layout when
    they are created. `fit` then splits each batch over the data-parallel
    replicas; the batch is the global one, so a `data_parallel` that does not
    divide it fails (`IndivisibleBatchError` when `batch_size` is given here,
    else in `fit`). `keras.distribution.set_distribution(None)` undoes it."""
    distribution = expert_distribution(data_parallel, expert_parallel, num_experts, batch_size)
    keras.distribution.set_distribution(distribution)
    return distribution


def expert_variables(model: keras.Layer) -> list[keras.Variable]:
    """Every variable of `model` with a leading expert axis: the routed
    experts' weights of its `MoEExpertHead` and `TokenExperts` layers."""
    found = []
    for layer in [model, *sublayers(model)]:
        if isinstance(layer, MoEExpertHead):
            found += [layer.up, layer.down, layer.head]
        elif isinstance(layer, TokenExperts):
            names = ("wi_0", "wi_1", "wo") if layer.is_gated else ("wi", "wo")
            found += [getattr(layer, name) for name in names]
    return found


def check_num_experts(num_experts: int, distribution=None) -> None:
    """An `IndivisibleExpertsError` when the distribution's expert axis does
    not divide `num_experts` (before any expert weight is created, which would
    fail inside JAX instead). No-op without a distribution or expert axis."""
    distribution = distribution or keras.distribution.distribution()
    if distribution is None or EXPERT_AXIS not in distribution.device_mesh.axis_names:
        return
    mesh = distribution.device_mesh
    check_mesh_shape(1, mesh.shape[mesh.axis_names.index(EXPERT_AXIS)], num_experts=num_experts)


def check_expert_sharding(model: keras.Layer, distribution=None) -> None:
    """Checks, once `model` is built, that it is laid out as `distribution`
    (default: the global one) says, and that its expert weights are split.

    Raises `UnmatchedExpertVariableError` naming every expert weight that no
    rule of the layout map splits on the `"expert"` axis (Keras would keep it
    whole on every device without a word), `IndivisibleExpertsError`, and
    `BuiltBeforeDistributionError` naming the variables that are not laid out
    as the distribution says (created before it was set). No-op without a
    distribution.
    """
    distribution = distribution or keras.distribution.distribution()
    if distribution is None:
        return
    require_keras_distribution()
    experts = expert_variables(model)
    if EXPERT_AXIS in distribution.device_mesh.axis_names:
        for layer in [model, *sublayers(model)]:
            if isinstance(layer, (MoEExpertHead, TokenExperts)):
                check_num_experts(layer.num_experts, distribution)
        unmatched = [
            variable.path
            for variable in experts
            if distribution.get_variable_layout(variable).axes[0] != EXPERT_AXIS
        ]
        if unmatched:
            raise UnmatchedExpertVariableError(
                f"{len(unmatched)} expert weight(s) matched no rule of the layout map that splits "
                f"them on the {EXPERT_AXIS!r} axis, so every device would hold all of them: "
                f"{', '.join(unmatched[:6])}{' …' if len(unmatched) > 6 else ''}. Build the "
                "distribution with `chronos_moe.distribution.expert_layout_map` (or add a rule "
                "for these paths to yours)."
            )
    misplaced = [
        variable.path
        for variable in model.variables
        if not backend.is_laid_out(variable.value, distribution.get_variable_layout(variable))
    ]
    if misplaced:
        raise BuiltBeforeDistributionError(
            f"{len(misplaced)} of the model's {len(model.variables)} variables are not laid out "
            f"on the distribution's device mesh: {', '.join(misplaced[:4])}"
            f"{' …' if len(misplaced) > 4 else ''}. They were created before "
            "the distribution was set; call `chronos_moe.distribution.distribute(...)` (or "
            "`keras.distribution.set_distribution`) before building or loading the model."
        )
