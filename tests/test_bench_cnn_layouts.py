"""benchmarks/bench_cnn_layouts.py: its variants change how a layer runs, never what it computes."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.bench_cnn_layouts import prelu_per_channel, transposed_conv_as_matmul


def test_transposed_conv_as_one_matmul_equals_torch():
    torch.manual_seed(0)
    upsample = nn.ConvTranspose1d(8, 6, kernel_size=5, stride=5)
    x = torch.randn(3, 8, 12)
    torch.testing.assert_close(transposed_conv_as_matmul(upsample, x),
                               F.conv_transpose1d(x, upsample.weight, upsample.bias, stride=5))


def test_prelu_with_its_weight_expanded_per_channel_has_the_same_outputs_and_gradients():
    prelu = nn.PReLU(init=0.3)
    x = torch.randn(4, 6, 50, requires_grad=True)
    grad = torch.randn(4, 6, 50)
    expected = torch.where(x > 0, x, 0.3 * x)
    expected_weight_grad = (grad * torch.clamp(x, max=0)).sum()
    out = prelu_per_channel(prelu, x)
    out.backward(grad)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(prelu.weight.grad, expected_weight_grad.reshape(1))
