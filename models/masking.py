"""Masks for masked prediction (MP), built batched on the input's device.

Every mask is a float tensor with 1 = masked (hidden from the encoder, a unit of the loss) and
0 = visible. Randomness comes from `torch.rand`, optionally from a `torch.Generator` on the
input's device, so a masking run can be reproduced exactly.

    random  an exact `ratio` fraction of the samples of each epoch (round(ratio * T)), chosen independently
    fixed_proportion_random
            the reference's name and rounding: T - int((1 - ratio) * T) samples (the same draw otherwise)
    span    contiguous spans of `span` samples, covering ~`ratio` of each epoch
    token   (Transformer only) MAE's random_masking: tokens are dropped before the encoder
"""
from __future__ import annotations

import torch

INPUT_MASKINGS = ("random", "span", "fixed_proportion_random")


def shuffled_order(batch: int, length: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random permutation of range(length) per row, (batch, length): argsort of uniform noise."""
    noise = torch.rand(batch, length, device=device, generator=generator)
    return torch.argsort(noise, dim=1)


def exact_random_mask(batch: int, length: int, n_masked: int, device, generator=None) -> torch.Tensor:
    """(batch, length) float mask with exactly `n_masked` ones per row, at random positions."""
    rank = torch.argsort(shuffled_order(batch, length, device, generator), dim=1)
    return (rank < n_masked).float()


def random_sample_mask(batch: int, length: int, ratio: float, device, generator=None) -> torch.Tensor:
    """(batch, length): round(ratio * length) individual samples masked in every epoch."""
    return exact_random_mask(batch, length, round(ratio * length), device, generator)


def span_mask(batch: int, length: int, ratio: float, span: int, device, generator=None) -> torch.Tensor:
    """(batch, length): contiguous spans of `span` samples covering ~ratio of every epoch.

    The epoch is cut into ceil(length / span) blocks of `span` samples, round(ratio * blocks) of
    them are masked, and each row's block grid is then shifted by a random offset in [0, span)
    (circularly), so spans do not sit on a fixed grid and never overlap.
    """
    n_blocks = -(-length // span)
    blocks = exact_random_mask(batch, n_blocks, round(ratio * n_blocks), device, generator)
    grid = blocks.repeat_interleave(span, dim=1)[:, :length]
    offset = torch.randint(0, span, (batch, 1), device=device, generator=generator)
    positions = (torch.arange(length, device=device) - offset) % length
    return torch.gather(grid, 1, positions)


def mask_input(x: torch.Tensor, ratio: float, masking: str, span: int, generator=None):
    """Zero the masked samples of x (B, C, T) (inputs are standardised: zero is the mean).

    Returns (masked x (B, C, T), mask (B, T) float, 1 = masked); the mask is shared by channels.
    """
    batch, _, length = x.shape
    if masking == "random":
        mask = random_sample_mask(batch, length, ratio, x.device, generator)
    elif masking == "fixed_proportion_random":
        mask = exact_random_mask(batch, length, length - int((1.0 - ratio) * length), x.device, generator)
    elif masking == "span":
        mask = span_mask(batch, length, ratio, span, x.device, generator)
    else:
        raise ValueError(f"input masking {masking!r} is not one of {list(INPUT_MASKINGS)}")
    return x * (1.0 - mask).unsqueeze(1).to(x.dtype), mask


def choose_tokens(batch: int, length: int, ratio: float, device, generator=None):
    """MAE's random_masking, as indices: drop a random round(ratio * length) tokens of each row, keep the rest.

    Returns (ids_keep (B, n_keep), mask (B, L) float 1 = dropped, ids_restore (B, L)), where
    ids_restore puts [kept, dropped] back into the original token order.
    """
    n_keep = length - round(ratio * length)
    order = shuffled_order(batch, length, device, generator)
    ids_restore = torch.argsort(order, dim=1)
    return order[:, :n_keep], (ids_restore >= n_keep).float(), ids_restore


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """tokens (B, L, *F), ids (B, n) -> tokens[b, ids[b]] (B, n, *F)."""
    index = ids.reshape(*ids.shape, *([1] * (tokens.dim() - 2))).expand(-1, -1, *tokens.shape[2:])
    return torch.gather(tokens, 1, index)
