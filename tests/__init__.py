"""The chronos-moe test suite (a package, so helpers such as
`tests.checkpoint_factory` import by name)."""

import importlib.util
import os

if importlib.util.find_spec("torch") is not None:
    import torch

    # The tests multiply tiny matrices. With several intra-op threads, torch's
    # thread-pool synchronisation costs more than the work: about 20 ms per small
    # matmul on a busy 2-core machine against 0.02 ms with one thread. This holds
    # for the reference transformers models and Keras' torch backend alike.
    torch.set_num_threads(1)
    # The same for every process a test starts (a training run, an example, the
    # newcomer's commands): they inherit the variable and start with one thread.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
