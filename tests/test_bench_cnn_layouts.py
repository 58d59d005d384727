"""benchmarks/bench_cnn_layouts.py: its variants change how a layer runs, never what it computes."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.bench_cnn_layouts import transposed_conv_as_matmul


def test_transposed_conv_as_one_matmul_equals_torch():
    torch.manual_seed(0)
    upsample = nn.ConvTranspose1d(8, 6, kernel_size=5, stride=5)
    x = torch.randn(3, 8, 12)
    torch.testing.assert_close(transposed_conv_as_matmul(upsample, x),
                               F.conv_transpose1d(x, upsample.weight, upsample.bias, stride=5))
