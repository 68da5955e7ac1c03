"""What training compares the decoder with: the labels shifted right into
decoder inputs (as T5 trains), and the cross-entropy over the labels that are
not ignored (-100)."""

from __future__ import annotations

from keras import ops

from chronos_moe import backend

IGNORE_INDEX = -100


def shift_right(labels, decoder_start_token_id: int = 0, pad_token_id: int = 0):
    """Decoder inputs from labels, as T5 trains: start token in front, the last
    label dropped, ignored positions (-100) replaced by the pad token."""
    labels = ops.convert_to_tensor(labels, "int32")
    start = ops.full((ops.shape(labels)[0], 1), decoder_start_token_id, "int32")
    shifted = ops.concatenate([start, labels[:, :-1]], axis=1)
    return ops.where(shifted == IGNORE_INDEX, pad_token_id, shifted)


def masked_cross_entropy(labels, logits):
    """Mean token cross-entropy over positions whose label is not -100.

    Computed in float32 (half-precision log-softmax over 4096 classes is too
    coarse). Matches `torch.nn.CrossEntropyLoss(ignore_index=-100)`.
    """
    labels = ops.convert_to_tensor(labels, "int32")
    valid = labels != IGNORE_INDEX
    log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    safe = ops.where(valid, labels, 0)
    picked = ops.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
    valid = ops.cast(valid, "float32")
    # Summed over the ranks of a torch data-parallel step (else as is): the
    # mean over the global batch's valid tokens.
    total = backend.global_sum(-ops.sum(picked * valid))
    return total / ops.maximum(backend.global_sum(ops.sum(valid)), 1.0)
