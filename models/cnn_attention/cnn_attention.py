"""CNN + attention: the CNN backbone with transformer-style self-attention over time.

A self-attention block (multi-head attention + add & norm, optional feed-forward + add & norm)
follows each encoder block listed in `attention_stages` (default the last two, 4 and 5: lengths
40 and 20 with the default pools) and, mirrored, each decoder block that runs at those stages'
lengths (the first two decoder blocks). Everything else, shapes included, is the CNN's
(models/cnn/cnn.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.cnn.cnn import CNN, block_widths
from utils import Field


def _distinct(value: list) -> str | None:
    return None if len(set(value)) == len(value) else "stages must be distinct"


class SelfAttentionBlock(nn.Module):
    """(B, C, L) -> (B, C, L): x = norm(x + MHA(x)); x = norm(x + FFN(x)) over the L time steps."""

    def __init__(self, channels: int, heads: int, dropout: float, feedforward: bool, mlp_ratio: float):
        super().__init__()
        self.attention = nn.MultiheadAttention(channels, heads, dropout=dropout, batch_first=True)
        self.attention_norm = nn.LayerNorm(channels)
        self.dropout = nn.Dropout(dropout)
        self.feedforward = None
        if feedforward:
            hidden = max(1, round(channels * mlp_ratio))
            self.feedforward = nn.Sequential(
                nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, channels), nn.Dropout(dropout)
            )
            self.feedforward_norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)  # (B, L, C)
        attended, _ = self.attention(h, h, h, need_weights=False)
        h = self.attention_norm(h + self.dropout(attended))
        if self.feedforward is not None:
            h = self.feedforward_norm(h + self.feedforward(h))
        return h.transpose(1, 2)


class CNNAttention(CNN):
    """CNN whose encoder blocks in `attention_stages` (1-based) and their mirrored decoder blocks
    are each followed by a SelfAttentionBlock."""

    PARAMS = {
        **CNN.PARAMS,
        "attention_stages": Field(list, [4, 5], item=Field(int, min=1), check=_distinct,
                                  doc="encoder blocks (1-based) followed by self-attention; mirrored in the decoder"),
        "attention_heads": Field(int, 4, min=1),
        "attention_dropout": Field(float, 0.1, min=0, max=0.99),
        "attention_feedforward": Field(bool, True, doc="feed-forward + add & norm after the attention"),
        "attention_mlp_ratio": Field(float, 2.0, min=0.1, doc="feed-forward width / channels"),
    }

    @classmethod
    def consistency_problems(cls, params: dict, path: str) -> list[str]:
        problems = super().consistency_problems(params, path)
        if problems:
            return problems
        widths = block_widths(params["initial_filters"], params["widths"], params["pool_sizes"])
        blocks = len(widths)
        heads = params["attention_heads"]
        for stage in params["attention_stages"]:
            if stage > blocks:
                problems.append(f"{path}.attention_stages: stage {stage} does not exist ({blocks} blocks)")
                continue
            mirrored_width = widths[max(stage - 2, 0)]  # the width the mirrored decoder block outputs
            for width in {widths[stage - 1], mirrored_width}:
                if width % heads:
                    problems.append(f"{path}.attention_heads: {heads} does not divide the width {width} "
                                    f"of attention stage {stage}")
        return problems

    def __init__(self, attention_stages, attention_heads, attention_dropout, attention_feedforward,
                 attention_mlp_ratio, build_decoder=True, **cnn_params):
        super().__init__(**cnn_params, build_decoder=build_decoder)
        self.attention_stages = sorted(attention_stages)
        blocks = len(self.widths)

        def attend(block: nn.Module, channels: int) -> nn.Sequential:
            attention = SelfAttentionBlock(channels, attention_heads, attention_dropout,
                                           attention_feedforward, attention_mlp_ratio)
            return nn.Sequential(block, attention)

        for stage in self.attention_stages:
            self.encoder.blocks[stage - 1] = attend(self.encoder.blocks[stage - 1], self.widths[stage - 1])
            if self.decoder is not None:
                mirror = blocks - stage
                self.decoder.blocks[mirror] = attend(self.decoder.blocks[mirror], self.widths[max(stage - 2, 0)])
