"""torch's private softmax kernels, used by the fused training attention
through two wrappers (`torch_dropout.softmax_in_place`,
`softmax_backward_in_place`): these tests fail loudly when torch renames or
changes them (then replace the wrappers' bodies, nothing else)."""

import keras
import pytest

pytestmark = pytest.mark.skipif(keras.config.backend() != "torch", reason="torch's private API")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_softmax_in_place_is_torch_softmax_written_into_its_input(dtype):
    import torch

    from chronos_moe.backend.torch_dropout import softmax_in_place

    scores = torch.randn(3, 2, 5, 7, generator=torch.Generator().manual_seed(0))
    scores = scores.to(getattr(torch, dtype))
    want = torch.softmax(scores, dim=-1)
    out = softmax_in_place(scores)
    assert out.data_ptr() == scores.data_ptr()  # no new tensor
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_softmax_backward_in_place_is_autograds_gradient(dtype):
    import torch

    from chronos_moe.backend.torch_dropout import softmax_backward_in_place

    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 2, 5, 7, generator=generator).to(getattr(torch, dtype))
    scores.requires_grad_(True)
    weights = torch.softmax(scores, dim=-1)
    grad = torch.randn(weights.shape, generator=generator).to(weights.dtype)
    (want,) = torch.autograd.grad(weights, scores, grad)
    buffer = grad.clone()
    out = softmax_backward_in_place(buffer, weights.detach())
    assert out.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(out, want)
