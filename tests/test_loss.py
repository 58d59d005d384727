"""loss.py: NT-Xent against a loop over the SimCLR formula, the DDP gather, masked reconstruction."""
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from loss import gather_with_grad, masked_reconstruction_loss, nt_xent


def nt_xent_by_loop(z1, z2, temperature, extra_negatives=None):
    """SimCLR's NT-Xent written out anchor by anchor, in float64."""
    z = torch.cat([z1, z2]).double()
    candidates = torch.cat([z, extra_negatives.double()]) if extra_negatives is not None else z
    B, losses = z1.shape[0], []
    for i in range(2 * B):
        positive = i + B if i < B else i - B
        sim = [torch.dot(z[i], c) / (z[i].norm() * c.norm()) / temperature for c in candidates]
        denominator = sum(torch.exp(s) for k, s in enumerate(sim) if k != i)
        losses.append(-torch.log(torch.exp(sim[positive]) / denominator))
    return torch.stack(losses).mean()


@pytest.fixture
def views():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)


@pytest.mark.parametrize("temperature", [0.1, 0.7])
def test_nt_xent_equals_the_formula(views, temperature):
    z1, z2 = views
    assert torch.allclose(nt_xent(z1, z2, temperature).double(), nt_xent_by_loop(z1, z2, temperature), atol=1e-5)


def test_temperature_is_used(views):
    assert not torch.isclose(nt_xent(*views, 0.1), nt_xent(*views, 0.5))


def test_perfect_alignment_with_orthogonal_negatives():
    B, tau = 4, 0.2
    z = torch.eye(B, 16)  # every epoch orthogonal to every other, both views identical
    expected = math.log(1 + (2 * B - 2) * math.exp(-1 / tau))
    assert nt_xent(z, z.clone(), tau).item() == pytest.approx(expected, rel=1e-5)


def test_gathered_candidates_add_negatives(views):
    z1, z2 = views
    others = torch.randn(10, 8)  # as if from other ranks

    def gather(z):
        return torch.cat([z, torch.nn.functional.normalize(others, dim=1)])

    expected = nt_xent_by_loop(z1, z2, 0.3, extra_negatives=others)
    assert torch.allclose(nt_xent(z1, z2, 0.3, gather=gather).double(), expected, atol=1e-5)


def test_gradient_and_float32_under_autocast(views):
    z1, z2 = (v.clone().requires_grad_() for v in views)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    assert gather_with_grad(z1) is z1  # no process group: identity


def test_bad_inputs_are_named(views):
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(*views, 0.0)
    with pytest.raises(ValueError, match="views"):
        nt_xent(views[0], views[1][:3], 0.1)


def _ddp_worker(rank, world, init_file, z1, z2, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    B = z1.shape[0] // world
    local = slice(rank * B, (rank + 1) * B)
    z1_local = z1[local].clone().requires_grad_()
    loss = nt_xent(z1_local, z2[local], 0.2, gather=gather_with_grad)
    loss.backward()
    out[rank] = torch.cat([loss.detach().reshape(1), z1_local.grad.abs().sum().reshape(1)])
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter teardown: a gloo/autograd thread still joinable there aborts ~1 run in 15


def test_negatives_from_all_ranks_give_the_global_loss(tmp_path):
    """With 2 gloo ranks, the mean of the local losses equals NT-Xent over the global batch."""
    z1, z2 = torch.randn(8, 5), torch.randn(8, 5)
    out = torch.zeros(2, 2).share_memory_()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), z1, z2, out), nprocs=2)
    assert out[:, 0].mean().item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-5)
    assert (out[:, 1] > 0).all()  # the local embeddings receive gradient


# ----------------------------------------------------------------------------- masked reconstruction
@pytest.fixture
def masked_batch():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])
    return pred, target, mask


def test_l2_by_hand(masked_batch):
    pred, target, mask = masked_batch
    units = [(0, 0), (0, 2), (1, 3)]
    expected = sum(((pred[b, l] - target[b, l]) ** 2).mean() for b, l in units) / len(units)
    assert masked_reconstruction_loss(pred, target, mask, "l2").item() == pytest.approx(expected.item(), rel=1e-6)


def test_cosine_by_hand(masked_batch):
    pred, target, mask = masked_batch
    per_sample = [1 - torch.nn.functional.cosine_similarity(pred[b, mask[b] > 0].flatten(),
                                                            target[b, mask[b] > 0].flatten(), dim=0)
                  for b in range(2)]
    expected = torch.stack(per_sample).mean().item()
    assert masked_reconstruction_loss(pred, target, mask, "cosine").item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["l2", "cosine"])
def test_only_masked_units_count(masked_batch, kind):
    pred, target, mask = masked_batch
    changed = torch.where(mask.bool().unsqueeze(-1), pred, pred + 100.0)
    assert masked_reconstruction_loss(changed, target, mask, kind) == masked_reconstruction_loss(pred, target, mask, kind)
    assert masked_reconstruction_loss(pred, target, mask, kind) != masked_reconstruction_loss(pred + 1, target, mask, kind)


@pytest.mark.parametrize("kind", ["l2", "cosine"])
def test_no_masked_unit_gives_zero_and_bool_mask_works(masked_batch, kind):
    pred, target, mask = masked_batch
    assert masked_reconstruction_loss(pred, target, torch.zeros_like(mask), kind).item() == 0.0
    assert masked_reconstruction_loss(pred, target, mask.bool(), kind) == masked_reconstruction_loss(pred, target, mask, kind)


def test_cosine_skips_samples_without_masked_units(masked_batch):
    pred, target, mask = masked_batch
    mask[1] = 0
    cosine = torch.nn.functional.cosine_similarity(pred[0, [0, 2]].flatten(), target[0, [0, 2]].flatten(), dim=0)
    assert masked_reconstruction_loss(pred, target, mask, "cosine").item() == pytest.approx(1 - cosine.item(), rel=1e-6)


def test_reconstruction_bad_inputs(masked_batch):
    pred, target, mask = masked_batch
    with pytest.raises(ValueError, match="kind"):
        masked_reconstruction_loss(pred, target, mask, "l1")
    with pytest.raises(ValueError, match="mask"):
        masked_reconstruction_loss(pred, target, mask[:, :3])
