"""CNN encoder (SleePyCo's five convolutional blocks) and its mirror decoder.

Shapes with the default PARAMS (preset "reference": the encoder of SleePyCo and of the seed's reference code,
1,142,973 parameters; widths 64, 128, 192, 256, 128; 2, 2, 3, 3, 3 convolutions; pools 5, 5, 5, 4):

    x        (B, 1, 3000)
    block 1  (B, 64, 3000)
    block 2  (B, 128, 600)     max-pool 5, then the block
    block 3  (B, 192, 120)  = c3
    block 4  (B, 256, 24)   = c4
    block 5  (B, 128, 6)    = c5
    latent   (B, 128)       L2-normalised global average of c5 (latent "normalized_pool");
                            or dropout + linear projection of it (latent "linear", the "small" preset)

A block is (Conv -> BatchNorm -> activation) x (layers - 1), Conv -> BatchNorm, channel gate
(squeeze-and-excitation), then the activation. The decoder mirrors it from c5: decoder block i
upsamples by the pool in front of encoder block i (transposed convolution, cropped to the length that
pool saw), then maps widths[i] back to the width that entered encoder block i; block 5' runs first,
block 1' last and outputs the reconstruction (B, 1, 3000).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.conv import Conv1d, ConvTranspose1d, PReLU
from utils import Field

ACTIVATIONS = {"prelu": PReLU, "relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
LATENTS = ("normalized_pool", "linear")

# Named architectures: a preset supplies the defaults of every parameter it lists; a config's explicit
# params override them. "small" is this project's earlier, 2.6x smaller encoder (kept for CPU demos).
PRESETS = {
    "reference": {},
    "small": {"widths": [16, 32, 64, 128, 256], "layers_per_block": [2, 2, 2, 2, 2], "pool_sizes": [5, 5, 3, 2],
              "activation": "relu", "conv_bias": False, "se_reduction": 4, "latent": "linear",
              "decoder_from_latent": True},
}


def _at_least_two(value: list) -> str | None:
    return None if len(value) >= 2 else "needs at least 2 entries (3 or more blocks: c3, c4, c5)"


class SqueezeExcitation(nn.Module):
    """Channel gate (Hu et al. 2018): x (B, C, L) * sigmoid(MLP(mean_L x)) (B, C, 1).

    The MLP has channels // reduction hidden units, as in SleePyCo; with none (a 1-channel block) it
    reduces to its output bias, so the gate is sigmoid of a learned per-channel constant.
    """

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = channels // reduction
        self.mlp = None
        if hidden:
            self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        else:
            self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(x.mean(dim=-1)) if self.mlp is not None else self.bias.expand(x.shape[0], -1)
        return x * torch.sigmoid(logits).unsqueeze(-1)


class ConvBlock(nn.Module):
    """(B, in_channels, L) -> (B, out_channels, L); 'same' padding keeps the length.

    (Conv -> BatchNorm -> act) x (layers - 1), Conv -> BatchNorm, channel gate, optional `attention`
    (a module (B, C, L) -> (B, C, L), see models/cnn_attention), then act.
    """

    def __init__(self, in_channels, out_channels, layers, kernel_size, conv_bias, activation, se_reduction,
                 attention: nn.Module | None = None):
        super().__init__()
        modules = []
        for i in range(layers):
            modules += [Conv1d(in_channels if i == 0 else out_channels, out_channels, kernel_size,
                                  padding="same", bias=conv_bias), nn.BatchNorm1d(out_channels)]
            if i < layers - 1:
                modules.append(ACTIVATIONS[activation]())
        self.convs = nn.Sequential(*modules)
        self.gate = SqueezeExcitation(out_channels, se_reduction) if se_reduction is not None else nn.Identity()
        self.attention = attention if attention is not None else nn.Identity()
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.attention(self.gate(self.convs(x))))


class ConvEncoder(nn.Module):
    """x (B, C, T) -> the output of every block [(B, widths[i], T_i)], T_i = ceil(T_{i-1} / pool_sizes[i-1])."""

    def __init__(self, blocks: list[ConvBlock], pool_sizes: list[int]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.pools = nn.ModuleList(nn.MaxPool1d(p, ceil_mode=True) for p in pool_sizes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stages = [self.blocks[0](x)]
        for pool, block in zip(self.pools, self.blocks[1:]):
            stages.append(block(pool(stages[-1])))
        return stages


class ConvDecoder(nn.Module):
    """The encoder's mirror: (c5 (B, widths[-1], T_n), lengths [T_1, ..., T_n]) -> (B, C, T_1).

    `blocks[i]` and `upsample[i - 1]` mirror encoder block i + 1 (0-based lists); they run from the last
    block to the first. `upsample[i - 1]` undoes the pool in front of encoder block i + 1.
    """

    def __init__(self, blocks: list[ConvBlock], widths: list[int], pool_sizes: list[int]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.upsample = nn.ModuleList(ConvTranspose1d(w, w, kernel_size=p, stride=p)
                                      for w, p in zip(widths[1:], pool_sizes))

    def forward(self, c5: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        h = c5
        for i in range(len(self.blocks) - 1, 0, -1):
            h = self.blocks[i](self.upsample[i - 1](h)[..., : lengths[i - 1]])
        return self.blocks[0](h)


class CNN(nn.Module):
    """The CNN backbone: encoder, latent, optional mirror decoder (see the module docstring)."""

    PRESETS = PRESETS
    PARAMS = {
        "preset": Field(str, "reference", choices=tuple(PRESETS), doc="named architecture supplying the defaults below"),
        "in_channels": Field(int, 1, min=1, doc="EEG channels of the input"),
        "widths": Field(list, [64, 128, 192, 256, 128], item=Field(int, min=1), doc="output channels of each block"),
        "layers_per_block": Field(list, [2, 2, 3, 3, 3], item=Field(int, min=1), doc="convolutions in each block"),
        "pool_sizes": Field(list, [5, 5, 5, 4], item=Field(int, min=1), check=_at_least_two,
                            doc="max-pool factor in front of blocks 2..n; blocks = len(pool_sizes) + 1"),
        "kernel_size": Field(int, 3, min=1),
        "conv_bias": Field(bool, True, doc="bias in the convolutions (SleePyCo has one)"),
        "activation": Field(str, "prelu", choices=tuple(ACTIVATIONS)),
        "squeeze_excitation": Field(bool, True, doc="channel gate after each block's last BatchNorm"),
        "se_reduction": Field(int, 16, min=1, doc="channel-gate bottleneck factor"),
        "latent": Field(str, "normalized_pool", choices=LATENTS,
                        doc="normalized_pool: L2-normalised mean of c5 (SleePyCo); linear: dropout + linear projection"),
        "dropout": Field(float, 0.5, min=0, max=0.99, doc="latent 'linear' only: dropout before the projection"),
        "latent_dim": Field(int, 128, min=1, doc="latent width; equals widths[-1] for latent 'normalized_pool'"),
        "decoder_from_latent": Field(bool, False, doc="add the projected latent to c5 before decoding (latent 'linear')"),
    }

    @classmethod
    def consistency_problems(cls, params: dict, path: str) -> list[str]:
        """Problems between params (already type-checked and default-filled)."""
        blocks = len(params["pool_sizes"]) + 1
        problems = [f"{path}.{key}: has {len(params[key])} entries, but pool_sizes {params['pool_sizes']} makes "
                    f"{blocks} blocks" for key in ("widths", "layers_per_block") if len(params[key]) != blocks]
        if params["latent"] == "normalized_pool" and params["latent_dim"] != params["widths"][-1]:
            problems.append(f"{path}.latent_dim: latent 'normalized_pool' is the pooled c5, so latent_dim must equal "
                            f"widths[-1] = {params['widths'][-1]}, got {params['latent_dim']}")
        if params["decoder_from_latent"] and params["latent"] != "linear":
            problems.append(f"{path}.decoder_from_latent: needs latent 'linear'")
        return problems

    def __init__(self, in_channels, widths, layers_per_block, pool_sizes, kernel_size, conv_bias, activation,
                 squeeze_excitation, se_reduction, latent, dropout, latent_dim, decoder_from_latent,
                 build_decoder=True, attention=None):
        """`attention(stage, channels)` (1-based stage; used by CNN_Attention) returns the module placed in
        encoder block `stage` (encoder=True) or its mirrored decoder block, or None."""
        super().__init__()
        self.widths, self.latent_kind, self.latent_dim = list(widths), latent, latent_dim
        attention = attention or (lambda stage, channels, encoder: None)

        def block(i, o, stage, n_layers, encoder):
            return ConvBlock(i, o, n_layers, kernel_size, conv_bias, activation,
                             se_reduction if squeeze_excitation else None, attention(stage, o, encoder))

        inputs = [in_channels] + self.widths[:-1]  # the width entering each encoder block
        stages = range(1, len(self.widths) + 1)
        self.encoder = ConvEncoder([block(i, o, s, n, True) for i, o, s, n in zip(inputs, self.widths, stages, layers_per_block)],
                                   pool_sizes)
        self.to_latent = None
        if latent == "linear":
            self.to_latent = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.widths[-1], latent_dim))
        self.decoder = self.from_latent = None
        if build_decoder:
            self.decoder = ConvDecoder([block(o, i, s, n, False) for i, o, s, n in zip(inputs, self.widths, stages, layers_per_block)],
                                       self.widths, pool_sizes)
            if decoder_from_latent:
                self.from_latent = nn.Linear(latent_dim, self.widths[-1])

    def forward_encoder(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x (B, C, T) -> (every block's output [.., c3, c4, c5], latent (B, latent_dim))."""
        stages = self.encoder(x)
        pooled = stages[-1].mean(dim=-1)
        latent = F.normalize(pooled, dim=1) if self.to_latent is None else self.to_latent(pooled)
        return stages, latent

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C, T) -> (c3, c4, c5), the outputs of the last three blocks."""
        c3, c4, c5 = self.encoder(x)[-3:]
        return c3, c4, c5

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T) -> latent (B, latent_dim)."""
        return self.forward_encoder(x)[1]

    def forward_decoder(self, stages: list[torch.Tensor], latent: torch.Tensor) -> torch.Tensor:
        """(encoder stages, latent) -> reconstruction (B, C, T), T = the length of block 1."""
        c5 = stages[-1] if self.from_latent is None else stages[-1] + self.from_latent(latent).unsqueeze(-1)
        return self.decoder(c5, [s.shape[-1] for s in stages])

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T) -> (reconstruction (B, C, T), latent (B, latent_dim)) through encoder and decoder."""
        stages, latent = self.forward_encoder(x)
        return self.forward_decoder(stages, latent), latent

    def token_masking_problem(self, mask_ratio: float) -> str | None:
        return "'token' masking needs backbone.type 'Transformer' (use 'random', 'span' or 'fixed_proportion_random' with a CNN)"
