"""training/augmentations.py: each augmentation's effect, the reference's bounds and order (its transform.py
and loader.py), the per-sample Bernoulli(p), seeding, dtypes."""
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch

from training.augmentations import (Augmenter, band_stop, cutout_resize, permutation, time_shift, time_warp,
                                    zero_masking)
from training.config import load_config
from utils import ConfigError

FS, T = 100, 3000


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def noise(B=16, C=1, T=T, dtype=torch.float32, seed=0):
    return torch.randn(B, C, T, generator=generator(seed), dtype=dtype)


def ramp(B=16, T=T, dtype=torch.float64):
    return torch.arange(T, dtype=dtype).expand(B, 1, T).contiguous()


def uniforms(B=16, k=1, dtype=torch.float64, seed=0):
    return torch.rand(B, k, generator=generator(seed), dtype=dtype)


REFERENCE_ORDER = ["band_stop", "time_shift", "time_warp", "permutation", "zero_masking", "cutout_resize"]


def only(name, **params):
    """An Augmenter applying `name` alone, always, with the default (reference) parameters unless given."""
    return Augmenter({"order": [name], name: {"p": 1.0, **params}})


def test_band_stop_is_the_references_causal_iir_notch():
    x, u = noise(B=6, dtype=torch.float64), uniforms(6)
    out = band_stop(x, u, fs=FS, min_freq=0.5, max_freq=30.0, bandwidth=2.0)
    for b in range(6):
        centre = 0.5 + 29.5 * u[b].item() + 1.0  # low + width / 2
        numerator, denominator = scipy.signal.iirnotch(centre, centre / 2.0, fs=FS)
        expected = scipy.signal.lfilter(numerator, denominator, x[b].numpy())
        assert np.abs(out[b].numpy() - expected).max() < 1e-9


def test_time_shift_fills_zeros_within_300_samples():
    x = ramp(B=3) + 1  # x[t] = t + 1: no zeros of its own, the shift readable from any kept sample
    augment = only("time_shift")
    u = torch.tensor([[0.0, 0.0], [0.0, 0.5], [0.0, 1 - 1e-12]], dtype=torch.float64)  # shifts -300, 0, 300
    out = augment.apply(x, u)[:, 0]
    for b, shift in enumerate([-300, 0, 300]):
        kept = out[b] != 0
        assert kept.sum() == T - abs(shift)  # zeros, not wrapped samples
        t = kept.nonzero().flatten()
        assert torch.equal(out[b, t], t + 1.0 - shift)  # out[t] = x[t - s]
    drawn = only("time_shift")(ramp(B=256, dtype=torch.float32) + 1, generator())[:, 0]
    zeros = (drawn == 0).sum(-1, keepdim=True)
    t = torch.arange(T)
    assert zeros.max() <= 300 and zeros.max() > 250
    assert ((drawn == 0) == ((t < zeros) & (drawn[:, :1] == 0) | (t >= T - zeros) & (drawn[:, -1:] == 0))).all()


def test_time_shift_circular_is_a_roll():
    x, shifts = noise(B=3), [-300, 0, 300]
    u = torch.tensor([[0.0, 0.0], [0.0, 0.5], [0.0, 1 - 1e-12]], dtype=torch.float32)
    out = only("time_shift", fill="circular").apply(x, u)
    for b, s in enumerate(shifts):
        assert torch.equal(out[b], torch.roll(x[b], s, dims=-1))


def test_zero_masking_zeroes_one_span_of_0_to_300_samples():
    x = torch.rand(256, 1, T, generator=generator()) + 1  # no zeros of its own
    out = only("zero_masking")(x, generator())
    zero = out[:, 0] == 0
    for b in range(x.shape[0]):
        where = zero[b].nonzero().flatten()
        assert len(where) <= 300
        if len(where):
            assert where[-1] - where[0] + 1 == len(where)  # contiguous
    assert torch.equal(out[~zero.unsqueeze(1)], x[~zero.unsqueeze(1)])
    u = torch.tensor([[0.0, 0.0, 0.3], [0.0, 1 - 1e-7, 0.3]])  # the shortest and the longest span
    assert (only("zero_masking").apply(x[:2], u) == 0).sum(-1).flatten().tolist() == [0, 300]


def test_permutation_uses_four_segments():
    out = only("permutation")(ramp(B=64), generator())[:, 0]
    starts = torch.cat([torch.ones(64, 1, dtype=torch.bool), out.diff(dim=-1) != 1], 1)  # a run starts
    assert (starts.sum(-1) <= 4).all() and (starts.sum(-1) == 4).any()
    assert set(out[starts].long().tolist()) <= {0, 750, 1500, 2250}


def test_cutout_resize_drops_one_of_four_segments():
    out = only("cutout_resize")(ramp(B=64), generator())[:, 0]
    per_segment = torch.stack([((out >= 750 * k) & (out < 750 * (k + 1))).sum(-1) for k in range(4)], 1)
    assert ((per_segment <= 2).sum(-1) == 1).all()  # one segment gone (two samples may interpolate across it)
    assert (per_segment.max(-1).values >= 999).all()  # the other three stretched by 4 / 3


def test_time_warp_stretches_four_segments_by_factors_in_half_to_two():
    out = only("time_warp")(ramp(B=64), generator())
    slope = out.diff(dim=-1)[:, 0]  # input samples per output sample: proportional to 1 / r_k in segment k
    assert out.shape == (64, 1, T) and (slope > 0).all()  # monotone
    assert (slope.max(-1).values / slope.min(-1).values <= 4 + 1e-6).all()  # r_j / r_k within 2 / 0.5
    pieces = (slope.diff(dim=-1).abs() > 1e-6).sum(-1)  # slope changes: at most 2 samples per inner knot
    assert (pieces <= 2 * 3).all()
    u = torch.tensor([[0.0, 0.0, 1 - 1e-12, 0.0, 1 - 1e-12]], dtype=torch.float64)  # factors 0.5, 2, 0.5, 2
    extreme = only("time_warp").apply(ramp(B=1), u).diff(dim=-1)
    assert extreme.max() / extreme.min() == pytest.approx(4, rel=1e-6)


def test_cutout_resize_equals_interpolating_the_signal_without_one_segment():
    x, n = noise(B=8, T=1001, dtype=torch.float64), 4
    out = cutout_resize(x, uniforms(8), fs=FS, n_segments=n)
    bounds = np.arange(n + 1) * 1001 // n
    for b in range(8):
        candidates = []
        for j in range(n):
            kept = np.delete(x[b, 0].numpy(), np.arange(bounds[j], bounds[j + 1]))
            candidates.append(np.interp(np.linspace(0, len(kept) - 1, 1001), np.arange(len(kept)), kept))
        assert min(np.abs(out[b, 0].numpy() - c).max() for c in candidates) < 1e-9
    monotone = cutout_resize(ramp(), uniforms(), fs=FS, n_segments=n)
    assert (monotone.diff(dim=-1) > 0).all()


def reference_split(signal, n):
    """The reference's segments (transform.py): len // n samples each, the remainder in the last."""
    length = len(signal) // n
    return [signal[k * length : (k + 1) * length if k < n - 1 else len(signal)] for k in range(n)]


@pytest.mark.parametrize("T_, n, low, high", [(3000, 4, 0.5, 2.0), (1001, 3, 0.3, 2.7)])
def test_fft_time_warp_is_the_references_scipy_resampling(T_, n, low, high):
    """The reference's TimeWarping: each segment scipy.signal.resample'd to int(len * r) samples, the join
    resampled back to T. The draws include r at both ends and r = 1 (odd, even, shorter and longer lengths)."""
    x = noise(B=6, C=2, T=T_, dtype=torch.float64)
    u = uniforms(6, n, seed=3)
    u[0, :3] = torch.tensor([0.0, 1 - 1e-12, (1 - low) / (high - low)])
    out = time_warp(x, u, fs=FS, n_segments=n, min_scale=low, max_scale=high, resample="fft")
    for b in range(6):
        for c in range(2):
            scales = low + (high - low) * u[b].numpy()
            warped = [scipy.signal.resample(s, max(1, int(len(s) * r))) for s, r in zip(reference_split(x[b, c].numpy(), n), scales)]
            expected = scipy.signal.resample(np.concatenate(warped), T_)
            np.testing.assert_allclose(out[b, c].numpy(), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("T_, n", [(3000, 4), (1001, 3)])
def test_fft_cutout_resize_is_the_references_scipy_resampling(T_, n):
    x, u = noise(B=8, T=T_, dtype=torch.float64), uniforms(8, seed=4)
    out = cutout_resize(x, u, fs=FS, n_segments=n, resample="fft")
    for b in range(8):
        segments = reference_split(x[b, 0].numpy(), n)
        del segments[int(u[b, 0] * n)]
        np.testing.assert_allclose(out[b, 0].numpy(), scipy.signal.resample(np.concatenate(segments), T_), rtol=0, atol=1e-9)


def test_fft_resampling_in_float32_stays_close_to_float64():
    x, u = noise(B=32), uniforms(32, 4, dtype=torch.float32, seed=5)
    fast = only("time_warp", resample="fft").apply(x, torch.cat([torch.zeros(32, 1), u], 1))
    exact = only("time_warp", resample="fft").apply(x.double(), torch.cat([torch.zeros(32, 1), u], 1).double())
    assert fast.dtype == torch.float32
    assert ((fast.double() - exact).norm() / exact.norm()).item() < 1e-5


def full_config(p):
    return {name: {"p": p} for name in REFERENCE_ORDER}


def test_p0_is_identity_and_p1_always_applies():
    x = noise(B=64)
    assert torch.equal(Augmenter(full_config(0.0))(x, generator()), x)
    assert (only("band_stop")(x, generator()) != x).any(-1).all()


def test_p_selects_the_samples_whose_first_uniform_is_below_p():
    x = noise(B=400, T=300)
    augment = Augmenter({"order": ["band_stop"], "band_stop": {"p": 0.3}})
    u = uniforms(400, augment.n_uniforms, dtype=torch.float32)
    changed = (augment.apply(x, u) != x).any(-1).squeeze(1)
    assert torch.equal(changed, u[:, 0] < 0.3)
    assert 80 < (augment(x, generator()) != x).any(-1).sum() < 160  # the call draws u itself


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_and_dtype_kept(dtype):
    x = noise(B=4, C=2, dtype=dtype)
    out = Augmenter(full_config(1.0))(x, generator())
    assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out.float()).all()


def test_same_seed_same_output():
    augment, x = Augmenter(full_config(0.5)), noise()
    assert torch.equal(augment(x, generator(3)), augment(x, generator(3)))
    assert not torch.equal(augment(x, generator(3)), augment(x, generator(4)))


def test_default_order_is_the_references_and_order_selects():
    assert [name for name, *_ in Augmenter({}).steps] == REFERENCE_ORDER
    assert all(p == 0.5 for _, p, *_ in Augmenter({}).steps)
    chosen = Augmenter({"order": ["permutation", "band_stop"], "band_stop": {"p": 0}})
    assert [name for name, *_ in chosen.steps] == ["permutation"]


def test_bad_config_and_input_are_named():
    with pytest.raises(ConfigError, match="mixup"):
        Augmenter({"mixup": {}})
    with pytest.raises(ConfigError, match=r"augmentations\.order: \['mixup'\] not among"):
        Augmenter({"order": ["band_stop", "mixup"]})
    with pytest.raises(ConfigError, match=r"augmentations\.order: \['time_shift'\] named more than once"):
        Augmenter({"order": ["time_shift", "band_stop", "time_shift"]})
    with pytest.raises(ConfigError, match="band_stop.p"):
        Augmenter({"band_stop": {"p": 2}})
    with pytest.raises(ConfigError, match="min_freq"):
        Augmenter({"band_stop": {"min_freq": 40.0, "max_freq": 30.0}})
    with pytest.raises(ConfigError, match="band_stop: the highest notch centre"):
        Augmenter({"band_stop": {"max_freq": 49.5}})
    with pytest.raises(ConfigError, match="time_warp: min_scale"):
        Augmenter({"time_warp": {"min_scale": 2.0, "max_scale": 0.5}})
    with pytest.raises(ConfigError, match="time_shift.fill"):
        Augmenter({"time_shift": {"fill": "reflect"}})
    with pytest.raises(ValueError, match="B, C, T"):
        Augmenter(full_config(0.5))(torch.zeros(4, T))


def test_a_config_with_a_bad_order_is_refused_naming_the_key():
    config = Path(__file__).resolve().parents[1] / "configs" / "DLPROJ_pretrain_CRL_CNN_Sleep-EDF-2018.json"
    with pytest.raises(ConfigError, match=r"ssl\.params\.augmentations\.order: \['band_stop'\] named more than once"):
        load_config(config, ['ssl.params.augmentations.order=["band_stop", "time_shift", "band_stop"]'])
    with pytest.raises(ConfigError, match=r"ssl\.params\.augmentations\.zero_masking\.max_ratio: unknown key"):
        load_config(config, ["ssl.params.augmentations.zero_masking.max_ratio=0.2"])  # renamed: max_length_s


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_without_host_syncs():
    x = noise(B=128).cuda()
    augment = Augmenter(full_config(0.5))
    g = torch.Generator(device="cuda").manual_seed(0)
    augment(x, g)  # warm-up (lazy CUDA/FFT-plan initialisation may sync)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = augment(x, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device == x.device and out.shape == x.shape



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["time_warp", "cutout_resize"])
def test_cuda_fft_resampling_is_captured_in_a_cuda_graph(name):
    """The reference twins train with resample 'fft'; a host-to-device copy inside it made CUDA-graph
    capture fail, and those runs fell back to eager steps (about 10 steps/s). The engine's graph draws
    from the default CUDA generator, which capture registers by itself; so does this test."""
    x = noise(B=64).cuda()
    augment = Augmenter({"order": [name], name: {"p": 1.0, "resample": "fft"}})
    augment(x)  # warm-up outside the graph (cuFFT plans)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = augment(x)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.isfinite(out).all() and (out != x).any()
