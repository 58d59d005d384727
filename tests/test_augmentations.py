"""training/augmentations.py: each augmentation's effect, the per-sample Bernoulli(p), seeding, dtypes."""
import numpy as np
import pytest
import torch

from training.augmentations import (Augmenter, band_stop, cutout_resize, permutation, time_shift, time_warp,
                                    zero_masking)
from training.config import AUGMENTATION_SCHEMA
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


def test_band_stop_zeroes_one_band_and_keeps_the_rest():
    x, u, bandwidth = noise(dtype=torch.float64), uniforms(), 2.0
    out = band_stop(x, u, fs=FS, min_freq=0.5, max_freq=30.0, bandwidth=bandwidth)
    before, after = torch.fft.rfft(x[:, 0]), torch.fft.rfft(out[:, 0])
    freqs = np.fft.rfftfreq(T, 1 / FS)
    stopped = after.abs() < 1e-9 * before.abs().max()
    for b in range(x.shape[0]):
        band = freqs[stopped[b].numpy()]
        assert 0 <= band.min() - (0.5 + 29.5 * u[b].item()) < 1 / 30  # starts at f0 (to one bin)
        assert band.max() - band.min() == pytest.approx(bandwidth, abs=2 / 30)  # bins are 1/30 Hz apart
        assert len(band) == pytest.approx(bandwidth * T / FS, abs=1)  # contiguous
    assert torch.allclose(after[~stopped], before[~stopped], rtol=1e-9, atol=1e-9)


def test_time_shift_is_a_circular_roll_by_the_drawn_offset():
    x, max_shift = noise(B=5), 50
    shifts = torch.tensor([-50, -7, 0, 13, 50])
    u = (shifts + max_shift + 0.5).double().unsqueeze(1) / (2 * max_shift + 1)  # the u that draws these shifts
    out = time_shift(x, u, fs=FS, max_shift_s=max_shift / FS)
    for b, s in enumerate(shifts.tolist()):
        assert torch.equal(out[b], torch.roll(x[b], s, dims=-1))
    assert time_shift(x, uniforms(5), fs=FS, max_shift_s=0.0).equal(x)


def test_zero_masking_zeroes_one_contiguous_span():
    x = torch.rand(32, 1, T, generator=generator()) + 1  # no zeros of its own
    out = zero_masking(x, uniforms(32, 2), fs=FS, max_ratio=0.2)
    zero = out[:, 0] == 0
    for b in range(x.shape[0]):
        where = zero[b].nonzero().flatten()
        assert 1 <= len(where) <= int(0.2 * T)
        assert where[-1] - where[0] + 1 == len(where)
    assert torch.equal(out[~zero.unsqueeze(1)], x[~zero.unsqueeze(1)])
    assert zero_masking(x, uniforms(32, 2), fs=FS, max_ratio=0.0) is x


@pytest.mark.parametrize("n_segments, length", [(5, 3000), (4, 1003)])
def test_permutation_reorders_whole_segments(n_segments, length):
    x = ramp(B=8, T=length)
    out = permutation(x, uniforms(8, n_segments), fs=FS, n_segments=n_segments)
    assert torch.equal(out.sort(-1).values, x)  # every sample exactly once
    jumps = (out.diff(dim=-1) != 1).sum(-1)
    assert (jumps <= n_segments - 1).all() and jumps.sum() > 0  # n contiguous runs, not all in order
    if length % n_segments == 0:  # equal segments: the multiset of segments is kept
        segments = out.view(8, n_segments, -1)
        firsts = segments[..., 0].sort(-1).values
        assert torch.equal(firsts, x.view(8, n_segments, -1)[..., 0])


def test_time_warp_is_a_smooth_monotone_resampling():
    max_stretch = 0.3
    out = time_warp(ramp(), uniforms(16, 4), fs=FS, n_segments=4, max_stretch=max_stretch)
    slope = out.diff(dim=-1)
    low, high = (1 - max_stretch) / (1 + max_stretch), (1 + max_stretch) / (1 - max_stretch)
    assert out.shape == (16, 1, T)
    assert (slope >= low - 1e-6).all() and (slope <= high + 1e-6).all()  # monotone, bounded stretch
    assert torch.allclose(out[..., 0], torch.tensor(0.0, dtype=out.dtype)) and torch.allclose(
        out[..., -1], torch.tensor(T - 1.0, dtype=out.dtype))
    assert (slope.std(-1) > 1e-3).all()  # actually warped


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


def full_config(p):
    return {name: {"p": p} for name in AUGMENTATION_SCHEMA}


def test_p0_is_identity_and_p1_always_applies():
    x = torch.rand(64, 1, T, generator=generator()) + 1
    assert torch.equal(Augmenter(full_config(0.0))(x, generator()), x)
    masked = Augmenter({"zero_masking": {"p": 1.0}})(x, generator())
    assert ((masked == 0).any(-1)).all()


def test_p_selects_the_samples_whose_first_uniform_is_below_p():
    x = torch.rand(400, 1, 300, generator=generator()) + 1
    augment = Augmenter({"zero_masking": {"p": 0.3}})
    u = uniforms(400, augment.n_uniforms, dtype=torch.float32)
    changed = (augment.apply(x, u) == 0).any(-1).squeeze(1)
    assert torch.equal(changed, u[:, 0] < 0.3)
    assert 80 < (augment(x, generator()) == 0).any(-1).sum() < 160  # the call draws u itself


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shape_and_dtype_kept(dtype):
    x = noise(B=4, C=2, dtype=dtype)
    out = Augmenter(full_config(1.0))(x, generator())
    assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out.float()).all()


def test_same_seed_same_output():
    augment, x = Augmenter(full_config(0.5)), noise()
    assert torch.equal(augment(x, generator(3)), augment(x, generator(3)))
    assert not torch.equal(augment(x, generator(3)), augment(x, generator(4)))


def test_absent_augmentation_is_not_applied():
    assert [name for name, *_ in Augmenter({"permutation": {}, "band_stop": {"p": 0}}).steps] == ["permutation"]


def test_bad_config_and_input_are_named():
    with pytest.raises(ConfigError, match="mixup"):
        Augmenter({"mixup": {}})
    with pytest.raises(ConfigError, match="band_stop.p"):
        Augmenter({"band_stop": {"p": 2}})
    with pytest.raises(ConfigError, match="min_freq"):
        Augmenter({"band_stop": {"min_freq": 40.0, "max_freq": 30.0}})
    with pytest.raises(ValueError, match="B, C, T"):
        Augmenter(full_config(0.5))(torch.zeros(4, T))


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
