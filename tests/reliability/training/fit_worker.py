"""A training script as a `model.fit` user writes it (no command line, no
`TrainingConfig`): the small MoE model of the reliability runs, trained on an
endless `ChronosDataset` with `chronos_moe.training.callbacks(..., resume=True)`.

Run it again after any interruption and it continues from the newest complete
checkpoint. Used by `test_fit_path.py`:

    python -m tests.reliability.training.fit_worker START DATA OUTPUT
"""

from __future__ import annotations

import sys

MAX_STEPS = 16


def main(start: str, data: str, output: str) -> int:
    import keras

    import chronos_moe
    from chronos_moe import checkpoints
    from chronos_moe.data import ChronosDataset
    from chronos_moe.moe.model import build_moe_chronos
    from chronos_moe.training import TrainingStopped

    keras.utils.set_random_seed(3)
    base = checkpoints.load_chronos(start)
    model = build_moe_chronos(base, num_experts=3, top_k=2, router_hidden_dim=8, seed=3)
    jit = keras.config.backend() == "jax"
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), jit_compile=jit)
    dataset = ChronosDataset(
        data, base.chronos_config, batch_size=4, min_past=8, shuffle_buffer_length=10, seed=3
    )
    guarantees = chronos_moe.training.callbacks(
        output,
        dataset,
        max_steps=MAX_STEPS,
        save_steps=2,
        save_total_limit=3,
        log_steps=4,
        resume=True,
        progress=False,
    )
    try:
        model.fit(
            dataset,
            epochs=1,
            steps_per_epoch=MAX_STEPS,
            shuffle=False,
            verbose=0,
            callbacks=guarantees,
        )
    except TrainingStopped as stopped:
        print(stopped, file=sys.stderr)
        return 0
    checkpoints.save_chronos(model, f"{output}/final")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
