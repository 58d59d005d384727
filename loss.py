"""Pre-training losses: NT-Xent (contrastive, CRL) and masked reconstruction (MP).

NT-Xent (SimCLR) over two views z1, z2 (B, D): with u = z / ||z||, the 2B anchors u_i, the
positive p(i) (the other view of the same epoch) and the temperature tau,

    l_i  = -log( exp(u_i . u_p(i) / tau) / sum_{k != i} exp(u_i . u_k / tau) ),    loss = mean_i l_i

so each anchor has 2B - 2 negatives; with `gather`, the candidates k also run over the embeddings
of every DDP rank (2 B W - 2 negatives), the anchors staying local.

Masked reconstruction over units (samples, spans or tokens) l = 1..L of P values each, with a
mask m (B, L) (1 = masked, to be reconstructed):

    l2:      sum_{b,l} m_bl * mean_p (pred - target)^2  /  sum_{b,l} m_bl
    cosine:  mean_b ( 1 - cos(pred_b[m_b], target_b[m_b]) )   (MAEEG; masked units x P flattened)

Only masked units count. A batch without any masked unit gives 0 (both kinds) and a sample
without one is left out of the cosine mean: no check needs the mask's content on the host.
The Hybrid loss is mp + alpha_crl * crl (training/paradigms.py).
All losses compute in float32, also under bf16 autocast.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """All-gather t (B, D) from every DDP rank -> (W B, D), this rank's rows first.

    Differentiable across ranks (torch.distributed.nn all_gather: its backward sums the gradients
    of every rank's loss into the rows each rank owns), so an embedding also receives the gradient
    it earns as a negative for the other ranks' anchors, and DDP's averaged gradient equals the
    single-process gradient of the same global batch. Every rank must pass the same shape.
    Without an initialised process group of more than one rank, returns t.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    gathered = list(all_gather(t.contiguous()))
    rank = dist.get_rank()
    return torch.cat([gathered[rank]] + gathered[:rank] + gathered[rank + 1:])


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float,
            gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """SimCLR NT-Xent loss of two views z1, z2 (B, D) at `temperature` -> scalar (float32).

    `gather(z)` (optional, e.g. `gather_with_grad`) maps the local (2B, D) normalised embeddings
    to the candidate set (N, D) whose first 2B rows are z itself; the other rows add negatives.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent needs two (B, D) views of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = 2 * z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D) anchors
        candidates = z if gather is None else gather(z)  # (N, D), first 2B rows = z
        logits = z @ candidates.T / temperature  # (2B, N)
        is_self = torch.eye(n, candidates.shape[0], dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(is_self, float("-inf"))
        positive = torch.arange(n, device=z.device).roll(n // 2)  # anchor i of view 1 <-> i + B of view 2
        return F.cross_entropy(logits, positive)


def masked_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                               kind: str = "l2") -> torch.Tensor:
    """Reconstruction error on masked units only -> scalar (float32).

    pred, target (B, L, P); mask (B, L), 1 (or True) where a unit was masked. kind "l2" or "cosine".
    """
    if pred.shape != target.shape or pred.ndim != 3 or mask.shape != pred.shape[:2]:
        raise ValueError(f"expected pred/target (B, L, P) and mask (B, L), got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)} and {tuple(mask.shape)}")
    pred, target, mask = pred.float(), target.float(), mask.float()
    if kind == "l2":
        per_unit = (pred - target).square().mean(-1)  # (B, L)
        return (per_unit * mask).sum() / mask.sum().clamp(min=1)
    if kind == "cosine":
        weight = mask.unsqueeze(-1)  # masked units only, flattened with P per sample
        dot = (pred * target * weight).sum((1, 2))
        norms = (pred.square() * weight).sum((1, 2)).sqrt() * (target.square() * weight).sum((1, 2)).sqrt()
        cosine = dot / norms.clamp(min=1e-8)
        has_masked = (mask.sum(1) > 0).float()
        return ((1 - cosine) * has_masked).sum() / has_masked.sum().clamp(min=1)
    raise ValueError(f"masked_reconstruction_loss: kind must be 'l2' or 'cosine', got {kind!r}")
