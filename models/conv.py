"""1-D convolutions that run channels-last on CUDA: same parameters, same outputs as torch.nn's.

cuDNN's fast bf16/TF32 convolution kernels are NHWC. Given PyTorch's (B, C, L) layout it converts every
input to NHWC and every output back, and on the H200 those conversions took 36 % of the MP CNN step's
GPU time. These layers run as (B, C, 1, L) 2-d convolutions in the channels-last format instead, so
activations stay (B, L, C) in memory from layer to layer, and torch.compile keeps that layout through
BatchNorm, activation and pooling. Measured with `benchmarks/bench_cnn_layouts.py` (H200, bf16, batch 128):
MP CNN 16.6k -> 20.5k samples/s; MP CNN_Attention 14.9k -> 18.0k and Hybrid CNN 9.6k -> 11.9k (those two with
the transposed convolution as a matmul, which on MP CNN made no difference).
On CPU the channels-last path was slower (demo MP CNN step 0.33 -> 0.42 s), so there they are nn's layers.

PReLU with one shared weight (the reference's) then led the profile: inductor fused its weight gradient into one
reduction over all B x C x L elements (10.6 % of the MP CNN step). Expanding the weight to one per channel
computes the same function and the same gradient, but reduces per channel first, as BatchNorm does:
MP CNN 20.4k -> 24.0k and MP CNN_Attention 18.0k -> 20.7k samples/s (same benchmark, H200, 2026-12-02).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, L) -> its (B, C, 1, L) view in channels-last memory (a copy only if x is (B, C, L) contiguous)."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


class Conv1d(nn.Conv1d):
    """nn.Conv1d; on CUDA computed as a channels-last (1, k) 2-d convolution. (B, C_in, L) -> (B, C_out, L')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda or self.padding_mode != "zeros":
            return super().forward(x)
        return self.forward_channels_last(x)

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.padding if isinstance(self.padding, str) else (0, self.padding[0])
        return F.conv2d(_as_2d(x), _as_2d(self.weight), self.bias, stride=(1, self.stride[0]), padding=padding,
                        dilation=(1, self.dilation[0]), groups=self.groups).squeeze(2)


class ConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d; on CUDA computed as a channels-last 2-d transposed convolution."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if not x.is_cuda or output_size is not None:
            return super().forward(x, output_size)
        return self.forward_channels_last(x)

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(_as_2d(x), _as_2d(self.weight), self.bias, stride=(1, self.stride[0]),
                                  padding=(0, self.padding[0]), output_padding=(0, self.output_padding[0]),
                                  groups=self.groups, dilation=(1, self.dilation[0])).squeeze(2)


class PReLU(nn.PReLU):
    """nn.PReLU (same parameter); a single shared weight is expanded per channel. (B, C, ...) -> (B, C, ...)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_parameters != 1 or x.dim() < 2:
            return super().forward(x)
        return F.prelu(x, self.weight.expand(x.shape[1]))
