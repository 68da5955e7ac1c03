"""TokenExperts: a T5 feed-forward layer made of routed experts, one route per
token, plus an optional shared expert (the upcycled dense feed-forward)."""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import keras
import numpy as np
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.common import invoke, normal_initializer, register
from chronos_moe.layers.feed_forward import T5FeedForward, activation, check_feed_forward_proj
from chronos_moe.moe.balancing import slot_shares, update_router_balance, validate_balancing
from chronos_moe.moe.router import select_experts, validate_routing

# The routing decisions of the `TokenExperts` layers called inside
# `recording_routes()`, in call order (see there).
_RECORDS: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "chronos_moe_token_routes", default=None
)

# Largest group of token slots that share one gathered copy of an expert's
# weights (see `TokenExperts.dispatch`).
MAX_TILE = 128
# The per-layer routing `ChronosMoE.call` returns at the token level, per stack.
TOKEN_ROUTING_KEYS = ("expert_indices", "gates", "router_probs", "router_logits")


@contextlib.contextmanager
def recording_routes() -> Iterator[list[dict]]:
    """Collects the routing of every `TokenExperts` layer called in this context.

    Each call appends a dict: `layer` (the `TokenExperts`), `expert_indices`
    int32 `(batch, len, k)`, `gates` `(batch, len, k)`, `router_probs` and
    `router_logits` float32 `(batch, len, N)`. The layers keep their plain
    `call(hidden_states) -> hidden_states` contract (the T5 blocks need not know
    about routing), and `ChronosMoE` reads the statistics for its balance
    losses here. Outside the context (cached decoding) nothing is recorded.

    Example:

    >>> import numpy as np
    >>> experts = TokenExperts(4, 2, intermediate_dim=8, hidden_dim=6)
    >>> with recording_routes() as records:
    ...     _ = experts(np.ones((2, 3, 6), "float32"))
    >>> len(records), tuple(records[0]["expert_indices"].shape)
    (1, (2, 3, 2))
    """
    records: list[dict] = []
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


def stack_routes(records: list[dict], encoder_layers: int) -> dict:
    """The routing records of `recording_routes`, stacked per stack over layers."""
    stacks = {"encoder": records[:encoder_layers], "decoder": records[encoder_layers:]}
    return {
        f"{stack}_{key}": ops.stack([record[key] for record in chosen])
        for stack, chosen in stacks.items()
        if chosen
        for key in TOKEN_ROUTING_KEYS
    }


def tile_size(slots: int, num_experts: int) -> int:
    """How many token slots share one gathered copy of an expert's weights.

    The largest power of two up to `MAX_TILE` with `4 · num_experts` tiles or
    more: training batches (thousands of slots) get tiles of 128, a decoding
    step of one series (a few dozen slots) tiles of 1 or 2, where a short
    loop of small products is cheaper than padding every expert's group to a
    large tile.
    """
    size = 1
    while size < MAX_TILE and 2 * size * 4 * num_experts <= slots:
        size *= 2
    return size


@register
class TokenExperts(keras.layers.Layer):
    """Routed feed-forward experts for a T5 block, one route per token.

    Each token's hidden state `x` (already normalised by the block's pre-norm)
    is routed by a float32 linear router `z = x W_r` to its `top_k` of
    `num_experts` experts (`select_experts`: top-k of `softmax(z) + bias`,
    gates renormalised over the k, the Switch gate for k = 1):

        y = FFN_shared(x) + Σ_j g_j · FFN_{e_j}(x)

    with `FFN(x) = act(x wi) wo` (or the gated `act(x wi_0) · (x wi_1) wo`)
    of the block's `feed_forward_proj`. The shared expert is a `T5FeedForward`,
    the dense layer it replaces. `build_moe_chronos(level="token")` upcycles a
    dense model: the shared expert gets the dense weights and every routed
    expert a copy of `wi` with `wo = 0`, so `y = FFN_dense(x)` exactly until
    training moves `wo`. Without a shared expert the routed experts are full
    copies of the dense layer and the gates sum to 1 (k = 1: the Switch gate's
    value is 1), so `y = FFN_dense(x)` up to rounding.

    Dispatch is sparse (`dispatch`): the token slots are sorted by expert and
    cut into tiles of one expert each, so compute grows with `top_k`, not with
    `num_experts`, and no token is dropped (no capacity factor). In training
    the layer keeps the balancing state of `ContextRouter` (`expert_load`,
    `selection_bias`), moved by `update_balance` with the padded tokens
    excluded (`ChronosMoE` calls it: only the model knows the masks).

    Args:
        num_experts: int. Number of routed experts `N`.
        top_k: int. Experts per token, `1 <= top_k <= num_experts`.
        intermediate_dim: int. Hidden width of each routed expert.
        hidden_dim: int. `d_model`. Required.
        feed_forward_proj: str. The activation, as `T5FeedForward`. Defaults
            to `"relu"`.
        shared_expert: bool. Add the always-on shared expert. Defaults to
            `True`.
        shared_intermediate_dim: int. Hidden width of the shared expert (the
            dense model's `d_ff`). Defaults to `intermediate_dim`.
        dropout_rate: float. Dropout in the shared expert. Defaults to `0.0`.
        balance_mode, balance_window, bias_update_rate: as `ContextRouter`.

    Call arguments:
        hidden_states: `(batch, len, hidden_dim)`.
        training: bool.

    Returns:
        `(batch, len, hidden_dim)`.

    Example:

    >>> import numpy as np
    >>> experts = TokenExperts(8, 2, intermediate_dim=16, hidden_dim=8)
    >>> tuple(experts(np.random.rand(2, 5, 8).astype("float32")).shape)
    (2, 5, 8)
    """

    def __init__(
        self,
        num_experts: int,
        top_k: int,
        intermediate_dim: int,
        hidden_dim: int | None = None,
        feed_forward_proj: str = "relu",
        shared_expert: bool = True,
        shared_intermediate_dim: int | None = None,
        dropout_rate: float = 0.0,
        balance_mode: str = "loss_and_bias",
        balance_window: int = 10,
        bias_update_rate: float = 1e-2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        validate_routing(num_experts, top_k)
        validate_balancing(balance_mode, balance_window, bias_update_rate)
        validate_feed_forward_proj(feed_forward_proj)
        if not isinstance(hidden_dim, int) or hidden_dim < 1:
            raise ValueError(f"`hidden_dim` must be an integer >= 1. Received: {hidden_dim!r}")
        self.num_experts = int(num_experts)
        self.top_k = int(top_k)
        self.intermediate_dim = int(intermediate_dim)
        self.hidden_dim = hidden_dim
        self.feed_forward_proj = feed_forward_proj
        self.shared_expert = bool(shared_expert)
        self.shared_intermediate_dim = int(shared_intermediate_dim or intermediate_dim)
        self.dropout_rate = dropout_rate
        self.balance_mode = balance_mode
        self.balance_window = int(balance_window)
        self.bias_update_rate = float(bias_update_rate)
        self.is_gated = feed_forward_proj.startswith("gated-")
        self.shared = None
        if self.shared_expert:
            self.shared = T5FeedForward(
                self.shared_intermediate_dim,
                feed_forward_proj,
                dropout_rate=dropout_rate,
                hidden_dim=hidden_dim,
                dtype=self.dtype_policy,
                name="shared",
            )

    def build(self, input_shape=None):
        if self.built:  # a deserialised layer is built before its block builds it
            return
        d, f, n = self.hidden_dim, self.intermediate_dim, self.num_experts
        if self.shared is not None:
            self.shared.build((None, None, d))
        names = ("wi_0", "wi_1") if self.is_gated else ("wi",)
        for name in names:  # as T5's wi: N(0, d_model^-1)
            setattr(
                self,
                name,
                self.add_weight(
                    name=name, shape=(n, d, f), initializer=normal_initializer(d**-0.5)
                ),
            )
        self.wo = self.add_weight(name="wo", shape=(n, f, d), initializer="zeros")
        # The router is float32 whatever the policy: softmax and top-k over
        # bfloat16 logits are too coarse to balance experts.
        self.router = self.add_weight(
            name="router", shape=(d, n), initializer=normal_initializer(d**-0.5), dtype="float32"
        )
        self.expert_load = self.add_weight(
            name="expert_load",
            shape=(n,),
            initializer=keras.initializers.Constant(1.0 / n),
            trainable=False,
            dtype="float32",
        )
        self.selection_bias = self.add_weight(
            name="selection_bias",
            shape=(n,),
            initializer="zeros",
            trainable=False,
            dtype="float32",
        )

    def route(self, tokens):
        """`select_experts` of the tokens `(rows, hidden_dim)`, in float32."""
        logits = ops.matmul(ops.cast(tokens, "float32"), ops.cast(self.router, "float32"))
        return select_experts(logits, self.selection_bias, self.top_k)

    def call(self, hidden_states, training=False):
        shape = ops.shape(hidden_states)
        tokens = ops.reshape(hidden_states, (-1, self.hidden_dim))  # (rows, d)
        routing = self.route(tokens)
        output = self.dispatch(tokens, routing["expert_indices"], routing["gates"])
        output = ops.reshape(output, shape)
        if self.shared is not None:
            output = output + invoke(self.shared, hidden_states, training=training)
        records = _RECORDS.get()
        if records is not None:
            records.append(
                {"layer": self}
                | {key: ops.reshape(value, (*shape[:-1], -1)) for key, value in routing.items()}
            )
        return output

    def expert_weights(self):
        """The routed experts' weights in the compute dtype: `(wi…, wo)`."""
        names = ("wi_0", "wi_1", "wo") if self.is_gated else ("wi", "wo")
        return [ops.cast(getattr(self, name), self.compute_dtype) for name in names]

    def dispatch(self, tokens, expert_indices, gates):
        """`Σ_j g_j · FFN_{e_j}(x)` for every token, running only chosen experts.

        The `rows · k` token slots are sorted by expert; the experts then run
        on their contiguous groups of slots (`sorted_experts`), and the
        outputs go back to their slots and are mixed by the gates. Every slot
        is computed (no capacity, no dropped token), and the cost grows with
        `top_k`, not with `num_experts`.

        Args:
            tokens: `(rows, hidden_dim)`.
            expert_indices: int32 `(rows, k)`.
            gates: `(rows, k)`.

        Returns:
            `(rows, hidden_dim)` in the compute dtype.
        """
        rows, top_k = ops.shape(expert_indices)
        slots = rows * top_k
        experts = ops.reshape(expert_indices, (slots,))
        # No gradient flows through these integer computations.
        order = ops.cast(ops.argsort(experts), "int32")  # slots sorted by expert
        counts = ops.sum(ops.one_hot(experts, self.num_experts, dtype="int32"), axis=0)  # (N,)
        x = ops.take(ops.cast(tokens, self.compute_dtype), order // top_k, axis=0)  # (slots, d)
        y = self.sorted_experts(x, counts, ops.take(experts, order))
        inverse = ops.argsort(order)  # slot → its row in the sorted order
        per_slot = ops.reshape(ops.take(y, inverse, axis=0), (rows, top_k, self.hidden_dim))
        return ops.sum(per_slot * ops.cast(gates, self.compute_dtype)[..., None], axis=1)

    def sorted_experts(self, x, counts, sorted_experts):
        """The routed experts on slots sorted by expert: `x` `(slots, d)`,
        `counts` `(N,)` slots per expert, `sorted_experts` `(slots,)` the
        expert of each slot; `(slots, d)`.

        Torch (eager, dynamic shapes): one product per expert on its slice
        (`backend.grouped_matmul`). JAX (static shapes under `jit`): the groups
        are padded to a multiple of the tile size `S` (`tile_size`) and each
        tile of `S` slots runs through its expert's weights in a loop over
        tiles (`ops.map`): at most `slots + N · (S − 1)` rows whatever the
        routing.
        """
        weights = self.expert_weights()
        first = backend.grouped_matmul(x, weights[0], counts)  # None: no such kernel (JAX)
        if first is not None:
            grouped = functools.partial(backend.grouped_matmul, group_sizes=counts)
            return self.feed_forward(x, first, weights, grouped)
        slots = ops.shape(x)[0]
        size = tile_size(slots, self.num_experts)
        num_tiles = -(-(slots + self.num_experts * (size - 1)) // size)
        capacity = num_tiles * size
        padded = (counts + size - 1) // size * size
        starts = ops.cumsum(counts) - counts
        padded_ends = ops.cumsum(padded)
        rank = ops.arange(slots, dtype="int32") - ops.take(starts, sorted_experts)
        position = ops.take(padded_ends - padded, sorted_experts) + rank  # (slots,)
        # Position → slot + 1 (0: padding, which reads a zero row).
        source = ops.scatter(
            position[:, None], ops.arange(1, slots + 1, dtype="int32"), (capacity,)
        )
        source = ops.where(source == 0, slots, source - 1)
        tile_starts = ops.arange(num_tiles, dtype="int32") * size
        tile_expert = ops.sum(
            ops.cast(tile_starts[:, None] >= padded_ends[None, :], "int32"), axis=1
        )
        tile_expert = ops.minimum(tile_expert, self.num_experts - 1)  # trailing empty tiles
        padded_x = ops.concatenate([x, ops.zeros((1, self.hidden_dim), x.dtype)], axis=0)
        tiles = ops.reshape(
            ops.take(padded_x, source, axis=0), (num_tiles, size, self.hidden_dim)
        )  # (tiles, S, d)

        def tile_feed_forward(tile_and_expert):
            # A plain 2-D product per tile, its expert's weights indexed in
            # the loop. One batched product over a weight copy per tile was
            # slower (XLA:CPU): up to 4x for a decoding step's small tiles,
            # 1.3x for a training batch's forward (benchmarks/RESULTS.md).
            tile, expert = tile_and_expert
            chosen = [ops.take(w, expert, axis=0) for w in weights]
            return self.feed_forward(
                tile, backend.matmul(tile, chosen[0]), chosen, backend.matmul
            )  # (S, d)

        y = ops.reshape(ops.map(tile_feed_forward, (tiles, tile_expert)), (capacity, -1))
        return ops.take(y, position, axis=0)

    def feed_forward(self, x, first, weights, product):
        """The experts' feed-forward of `x` from its first product `first`
        (`x · wi` or `x · wi_0`): the activation, the gate's product when
        gated, the output product; `weights` are `expert_weights()` (or one
        expert's) and `product(a, w)` the matrix product that applies them."""
        hidden = activation(self.feed_forward_proj, first)
        if self.is_gated:
            hidden = hidden * product(x, weights[1])
        return product(hidden, weights[-1])

    def upcycle(self, dense: T5FeedForward) -> None:
        """Starts these experts from the dense feed-forward layer `dense`
        without changing the layer's function (see the class docstring).

        With a shared expert: shared = `dense`; each routed `wi` is a slice of
        `intermediate_dim` columns of the dense `wi` (expert `e` from column
        `e · intermediate_dim`, cyclically; all of it when the widths match);
        `wo = 0`, so the routed experts add exactly zero. Without one: every
        routed expert is a copy of `dense` (the widths must match)."""
        if dense.feed_forward_proj != self.feed_forward_proj:
            raise ValueError(
                "The dense feed-forward layer has another activation. Received: "
                f"{dense.feed_forward_proj!r}, experts {self.feed_forward_proj!r}"
            )
        names = ("wi_0", "wi_1") if self.is_gated else ("wi",)
        dense_wi = {name: ops.convert_to_numpy(getattr(dense, name).kernel) for name in names}
        d_ff = dense.intermediate_dim
        width = self.intermediate_dim
        if self.shared is not None:
            self.shared.set_weights(dense.get_weights())
            columns = [(e * width + np.arange(width)) % d_ff for e in range(self.num_experts)]
            for name in names:
                kernel = np.stack([dense_wi[name][:, c] for c in columns])
                getattr(self, name).assign(kernel.astype(getattr(self, name).dtype))
            self.wo.assign(np.zeros(self.wo.shape, self.wo.dtype))
            return
        if width != d_ff:
            raise ValueError(
                "Without a shared expert the routed experts are copies of the dense layer, so "
                f"`expert_hidden_dim` must equal its d_ff. Received: expert_hidden_dim={width}, "
                f"d_ff={d_ff}"
            )
        for name in names:
            copies = np.repeat(dense_wi[name][None], self.num_experts, axis=0)
            getattr(self, name).assign(copies.astype(getattr(self, name).dtype))
        wo = np.repeat(ops.convert_to_numpy(dense.wo.kernel)[None], self.num_experts, axis=0)
        self.wo.assign(wo.astype(self.wo.dtype))

    def update_balance(self, expert_indices, mask=None):
        """Folds one training step's routing (`(..., k)`, `mask` `(...)`: the
        tokens to count) into `expert_load` and `selection_bias`."""
        indices = ops.reshape(expert_indices, (-1, self.top_k))
        flat_mask = None if mask is None else ops.reshape(mask, (-1,))
        shares = slot_shares(indices, self.num_experts, flat_mask)
        update_router_balance(self, shares)

    def compute_output_spec(self, hidden_states, training=False):
        return keras.KerasTensor(hidden_states.shape, dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "intermediate_dim": self.intermediate_dim,
            "hidden_dim": self.hidden_dim,
            "feed_forward_proj": self.feed_forward_proj,
            "shared_expert": self.shared_expert,
            "shared_intermediate_dim": self.shared_intermediate_dim,
            "dropout_rate": self.dropout_rate,
            "balance_mode": self.balance_mode,
            "balance_window": self.balance_window,
            "bias_update_rate": self.bias_update_rate,
        }


def validate_feed_forward_proj(feed_forward_proj) -> None:
    """A named error for a feed-forward type the experts cannot copy."""
    try:
        check_feed_forward_proj(feed_forward_proj)
    except ValueError as error:
        raise ValueError(
            f"Token-level experts copy the model's feed-forward layer: {error}"
        ) from None


def grouped_matmul_reference(x, weights, group_sizes):
    """The `keras.ops` reference of `backend.grouped_matmul`: each row through
    the weights of its group (rows sorted by group), `(rows, f)`."""
    rows = ops.shape(x)[0]
    ends = ops.cumsum(group_sizes)
    group = ops.sum(
        ops.cast(ops.arange(rows, dtype="int32")[:, None] >= ends[None, :], "int32"), axis=1
    )
    return ops.einsum("rd,rdf->rf", x, ops.take(weights, group, axis=0))


def dense_reference(layer: TokenExperts, tokens, expert_indices, gates):
    """`dispatch` computed the slow way, for the tests: every expert on every
    token, masked by the gates. `(rows, hidden_dim)`."""
    weights = layer.expert_weights()
    x = ops.cast(tokens, layer.compute_dtype)
    if layer.is_gated:
        hidden = activation(layer.feed_forward_proj, ops.einsum("td,edf->etf", x, weights[0]))
        hidden = hidden * ops.einsum("td,edf->etf", x, weights[1])
    else:
        hidden = activation(layer.feed_forward_proj, ops.einsum("td,edf->etf", x, weights[0]))
    outputs = ops.einsum("etf,efd->etd", hidden, weights[-1])  # (N, rows, d)
    mixing = ops.sum(
        ops.one_hot(expert_indices, layer.num_experts, dtype=layer.compute_dtype)
        * ops.cast(gates, layer.compute_dtype)[..., None],
        axis=1,
    )  # (rows, N)
    return ops.einsum("te,etd->td", mixing, outputs)


def series_routes(indices, probs, mask, top_k: int) -> dict[str, np.ndarray]:
    """Per-series summaries of token routes (what the pipelines' `route` returns
    for token-level experts): `indices` `(layers, batch, len, k)`, `probs`
    `(layers, batch, len, N)`, `mask` `(batch, len)`, numpy. A series' experts
    are the `top_k` that received most of its tokens' slots, its gates their
    shares renormalised (see `ChronosPipeline.route`)."""
    num_experts = probs.shape[-1]
    weights = mask.astype(np.float64)[None, :, :, None]  # (1, batch, len, 1)
    slots = (indices[..., None] == np.arange(num_experts)).sum(axis=-2) * weights
    layer_shares = slots.sum(axis=2) / np.maximum(slots.sum(axis=(2, 3))[..., None], 1)
    layer_shares = layer_shares.transpose(1, 0, 2)  # (batch, layers, N)
    shares = layer_shares.mean(axis=1)
    expert_indices = np.argsort(-shares, axis=1, kind="stable")[:, :top_k]
    chosen = np.take_along_axis(shares, expert_indices, axis=1)
    gates = chosen / np.maximum(chosen.sum(axis=1, keepdims=True), 1e-12)
    router_probs = (probs * weights).sum(axis=(0, 2)) / np.maximum(
        weights.sum(axis=(0, 2)) * probs.shape[0], 1
    )
    return {
        "expert_indices": expert_indices.astype(np.int32),
        "gates": gates.astype(np.float32),
        "router_probs": router_probs.astype(np.float32),
        "layer_shares": layer_shares.astype(np.float32),
    }
