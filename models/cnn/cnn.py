"""CNN encoder: five convolutional blocks with pooling between them, and its mirror decoder.

Shapes with the default PARAMS (widths 16, 32, 64, 128, 256; pools 5, 5, 3, 2):

    x        (B, 1, 3000)
    block 1  (B, 16, 3000)  -> max-pool 5
    block 2  (B, 32, 600)   -> max-pool 5
    block 3  (B, 64, 120)   = c3   -> max-pool 3
    block 4  (B, 128, 40)   = c4   -> max-pool 2
    block 5  (B, 256, 20)   = c5
    latent   (B, 128)       global average of c5 -> dropout -> linear projection

The decoder mirrors the encoder from c5 (plus the latent, broadcast over time, so that masked
prediction also trains the latent): block 5' (256 -> 128 channels) at length 20, transposed
convolution up to 40, block 4' (128 -> 64) at 40, ... block 1' at 3000, then a 1x1 convolution to
the input channels: the reconstruction (B, 1, 3000). Each transposed convolution is given the
length recorded in the encoder, so any input length is reconstructed exactly (no cropping).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from utils import Field

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}


def block_widths(initial_filters: int, widths: list[int] | None, pool_sizes: list[int]) -> list[int]:
    """The width of every block: `widths` when given, else initial_filters doubling per block."""
    return list(widths or [initial_filters * 2**i for i in range(len(pool_sizes) + 1)])


def _at_least_two(value: list) -> str | None:
    return None if len(value) >= 2 else "needs at least 2 entries (3 or more blocks: c3, c4, c5)"


class SqueezeExcitation(nn.Module):
    """Channel gating (Hu et al. 2018): x (B, C, L) * sigmoid(MLP(mean_L x)) (B, C, 1)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=-1)).unsqueeze(-1)


class ConvBlock(nn.Sequential):
    """`layers` x (Conv1d -> BatchNorm -> activation), then optional squeeze-excitation.

    (B, in_channels, L) -> (B, out_channels, L): 'same' padding keeps the length.
    """

    def __init__(self, in_channels, out_channels, kernel_size, layers, activation, se_reduction):
        modules = []
        for i in range(layers):
            modules += [
                nn.Conv1d(in_channels if i == 0 else out_channels, out_channels, kernel_size, padding="same", bias=False),
                nn.BatchNorm1d(out_channels),
                ACTIVATIONS[activation](),
            ]
        if se_reduction is not None:
            modules.append(SqueezeExcitation(out_channels, se_reduction))
        super().__init__(*modules)


class ConvEncoder(nn.Module):
    """x (B, C, T) -> the output of every block, [(B, widths[i], T_i)], T_i = T_{i-1} // pool_sizes[i-1]."""

    def __init__(self, in_channels, widths, pool_sizes, block_args: dict):
        super().__init__()
        inputs = [in_channels] + widths[:-1]
        self.blocks = nn.ModuleList(ConvBlock(i, o, **block_args) for i, o in zip(inputs, widths))
        self.pools = nn.ModuleList(nn.MaxPool1d(p) for p in pool_sizes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stages = [self.blocks[0](x)]
        for pool, block in zip(self.pools, self.blocks[1:]):
            stages.append(block(pool(stages[-1])))
        return stages


class ConvDecoder(nn.Module):
    """The encoder's mirror: (c5 (B, widths[-1], T_n), latent, lengths [T, T_2, ..., T_n]) -> (B, C, T).

    `blocks[j]` mirrors encoder block n - j (it runs at that block's length), `upsample[j]` then
    restores the length before that block's pooling.
    """

    def __init__(self, out_channels, widths, pool_sizes, latent_dim, block_args: dict):
        super().__init__()
        self.from_latent = nn.Linear(latent_dim, widths[-1])
        outputs = widths[-2::-1] + widths[:1]  # block n' -> widths[n-2], ..., block 1' -> widths[0]
        self.blocks = nn.ModuleList(
            ConvBlock(i, o, **block_args) for i, o in zip(widths[::-1], outputs)
        )
        self.upsample = nn.ModuleList(
            nn.ConvTranspose1d(w, w, kernel_size=p, stride=p) for w, p in zip(outputs, pool_sizes[::-1])
        )
        self.head = nn.Conv1d(widths[0], out_channels, kernel_size=1)

    def forward(self, c5: torch.Tensor, latent: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        h = c5 + self.from_latent(latent).unsqueeze(-1)
        for block, upsample, length in zip(self.blocks, self.upsample, lengths[-2::-1]):
            h = upsample(block(h), output_size=[length])
        return self.head(self.blocks[-1](h))


class CNN(nn.Module):
    """The CNN backbone: encoder, latent projection, optional mirror decoder (see the module docstring)."""

    PARAMS = {
        "in_channels": Field(int, 1, min=1, doc="EEG channels of the input"),
        "initial_filters": Field(int, 16, min=1, doc="width of block 1; block i has initial_filters * 2**(i-1)"),
        "widths": Field(list, None, nullable=True, item=Field(int, min=1),
                        doc="per-block widths (overrides initial_filters); one per block"),
        "pool_sizes": Field(list, [5, 5, 3, 2], item=Field(int, min=1), check=_at_least_two,
                            doc="max-pool factor between consecutive blocks; blocks = len(pool_sizes) + 1"),
        "layers_per_block": Field(int, 2, min=1, doc="Conv-BN-activation layers in each block"),
        "kernel_size": Field(int, 3, min=1),
        "activation": Field(str, "relu", choices=tuple(ACTIVATIONS)),
        "squeeze_excitation": Field(bool, True, doc="squeeze-and-excitation channel gating after each block"),
        "se_reduction": Field(int, 4, min=1, doc="squeeze-excitation bottleneck factor"),
        "dropout": Field(float, 0.5, min=0, max=0.99, doc="dropout on the pooled c5 features before the latent projection"),
        "latent_dim": Field(int, 128, min=1),
    }

    @classmethod
    def consistency_problems(cls, params: dict, path: str) -> list[str]:
        """Problems between params (already type-checked and default-filled)."""
        blocks = len(params["pool_sizes"]) + 1
        if params["widths"] is not None and len(params["widths"]) != blocks:
            return [f"{path}.widths: has {len(params['widths'])} entries, but pool_sizes "
                    f"{params['pool_sizes']} makes {blocks} blocks"]
        return []

    def __init__(self, in_channels, initial_filters, widths, pool_sizes, layers_per_block, kernel_size,
                 activation, squeeze_excitation, se_reduction, dropout, latent_dim, build_decoder=True):
        super().__init__()
        self.widths = block_widths(initial_filters, widths, pool_sizes)
        self.latent_dim = latent_dim
        block_args = dict(kernel_size=kernel_size, layers=layers_per_block, activation=activation,
                          se_reduction=se_reduction if squeeze_excitation else None)
        self.encoder = ConvEncoder(in_channels, self.widths, pool_sizes, block_args)
        self.to_latent = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.widths[-1], latent_dim))
        self.decoder = ConvDecoder(in_channels, self.widths, pool_sizes, latent_dim, block_args) if build_decoder else None

    def forward_encoder(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x (B, C, T) -> (every block's output [.., c3, c4, c5], latent (B, latent_dim))."""
        stages = self.encoder(x)
        return stages, self.to_latent(stages[-1].mean(dim=-1))

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C, T) -> (c3, c4, c5), the outputs of the last three blocks."""
        c3, c4, c5 = self.encoder(x)[-3:]
        return c3, c4, c5

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T) -> latent (B, latent_dim)."""
        return self.forward_encoder(x)[1]

    def forward_decoder(self, stages: list[torch.Tensor], latent: torch.Tensor) -> torch.Tensor:
        """(encoder stages, latent) -> reconstruction (B, C, T), T = the length of block 1."""
        return self.decoder(stages[-1], latent, [s.shape[-1] for s in stages])

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T) -> (reconstruction (B, C, T), latent (B, latent_dim)) through encoder and decoder."""
        stages, latent = self.forward_encoder(x)
        return self.forward_decoder(stages, latent), latent

    def token_masking_problem(self, mask_ratio: float) -> str | None:
        return "'token' masking needs backbone.type 'Transformer' (use 'random' or 'span' with a CNN)"
