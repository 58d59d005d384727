"""SignalBackbone: a tri-branch ResNet-style 1-D feature extractor applied to every frame of an epoch.

The epoch is cut into overlapping frames (sliding windows of window_s seconds every step_s
seconds, `tensor.unfold`); all frames of the batch go through the network as one big batch.

    frames   (B, L, C, W)          e.g. L = 21 frames of W = 500 samples (5 s every 1.25 s)
    branch k (B*L, width, W / 2**(depth+2)) for each kernel size k (default 3, 5, 7): a stride-2
                 convolution and a max-pool 2 (500 -> 125), then `depth` residual blocks that
                 each halve the length (125 -> 62 -> 31 -> 15)
    output   (B, L, len(kernel_sizes) * width)   global average of every branch, concatenated
"""
from __future__ import annotations

import torch
import torch.nn as nn


class ResidualBlock(nn.Module):
    """(N, width, W) -> (N, width, W // 2): two convolutions with a skip connection, then max-pool 2."""

    def __init__(self, width: int, kernel_size: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(width, width, kernel_size, padding="same", bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Conv1d(width, width, kernel_size, padding="same", bias=False),
            nn.BatchNorm1d(width),
        )
        self.activation = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.activation(x + self.body(x)))


class Branch(nn.Sequential):
    """(N, C, W) -> (N, width): a stem (stride-2 convolution, max-pool 2) and `depth` residual blocks of
    one kernel size, averaged over time."""

    def __init__(self, in_channels: int, width: int, kernel_size: int, depth: int):
        super().__init__(
            nn.Conv1d(in_channels, width, kernel_size, stride=2, padding=kernel_size // 2, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(2),
            *[ResidualBlock(width, kernel_size) for _ in range(depth)],
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
        )


class SignalBackbone(nn.Module):
    """frames (B, L, C, W) -> one feature vector per frame (B, L, out_features)."""

    def __init__(self, in_channels: int, width: int, kernel_sizes: list[int], depth: int):
        super().__init__()
        self.branches = nn.ModuleList(Branch(in_channels, width, k, depth) for k in kernel_sizes)
        self.out_features = width * len(kernel_sizes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        batch, length = frames.shape[:2]
        flat = frames.reshape(batch * length, *frames.shape[2:])
        features = torch.cat([branch(flat) for branch in self.branches], dim=-1)
        return features.reshape(batch, length, self.out_features)
