"""CNN + attention: the CNN backbone with transformer-style self-attention over time.

A self-attention block (8-head attention + add & norm; optionally a feed-forward + add & norm) sits in
each encoder block listed in `attention_stages` (default the last two, 4 and 5: 256 channels at length
24 and 128 at length 6), after the channel gate, and in the mirrored decoder blocks 5' and 4' (256 and
192 channels), as in the reference code: 1,472,957 encoder and 2,163,327 decoder parameters. Everything
else, shapes included, is the CNN's (models/cnn/cnn.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.cnn.cnn import CNN
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
    """CNN whose encoder blocks in `attention_stages` (1-based) and their mirrored decoder blocks each
    hold a SelfAttentionBlock between the channel gate and the activation (as in the reference code)."""

    PRESETS = {"reference": {},
               "small": {**CNN.PRESETS["small"], "attention_heads": 4, "attention_dropout": 0.1,
                         "attention_feedforward": True}}
    PARAMS = {
        **CNN.PARAMS,
        "preset": Field(str, "reference", choices=tuple(PRESETS), doc="named architecture supplying the defaults"),
        "attention_stages": Field(list, [4, 5], item=Field(int, min=1), check=_distinct,
                                  doc="encoder blocks (1-based) with self-attention; mirrored in the decoder"),
        "attention_heads": Field(int, 8, min=1),
        "attention_dropout": Field(float, 0.0, min=0, max=0.99),
        "attention_feedforward": Field(bool, False, doc="feed-forward + add & norm after the attention"),
        "attention_mlp_ratio": Field(float, 2.0, min=0.1, doc="feed-forward width / channels"),
    }

    @classmethod
    def consistency_problems(cls, params: dict, path: str) -> list[str]:
        problems = super().consistency_problems(params, path)
        if problems:
            return problems
        widths = params["widths"]
        heads = params["attention_heads"]
        for stage in params["attention_stages"]:
            if stage > len(widths):
                problems.append(f"{path}.attention_stages: stage {stage} does not exist ({len(widths)} blocks)")
                continue
            mirrored_width = widths[stage - 2] if stage > 1 else params["in_channels"]  # what the decoder block outputs
            for width in {widths[stage - 1], mirrored_width}:
                if width % heads:
                    problems.append(f"{path}.attention_heads: {heads} does not divide the width {width} "
                                    f"of attention stage {stage}")
        return problems

    def __init__(self, attention_stages, attention_heads, attention_dropout, attention_feedforward,
                 attention_mlp_ratio, build_decoder=True, **cnn_params):
        def attention(stage: int, channels: int, encoder: bool) -> SelfAttentionBlock | None:
            if stage not in attention_stages:
                return None
            return SelfAttentionBlock(channels, attention_heads, attention_dropout, attention_feedforward,
                                      attention_mlp_ratio)

        super().__init__(**cnn_params, build_decoder=build_decoder, attention=attention)
