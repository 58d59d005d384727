"""Batched, on-device EEG augmentations for contrastive pre-training (CRL and Hybrid).

Each augmentation maps a batch x (B, C, T) and per-sample uniforms u (B, k) in [0, 1) to an
augmented batch of the same shape, dtype and device. All are pure tensor programs (FFT filtering,
gathers, repeat_interleave, linear interpolation, FFT resampling): no per-sample Python loop, no NumPy, no
host-device synchronisation, so they run inside the training step on the GPU instead of in
data-loader workers. `Augmenter` draws all the uniforms of a batch in one torch.rand on x's
device, from an optional torch.Generator (seeded: reproducible).

    band_stop      the reference's IIR notch (scipy iirnotch, Q = centre / bandwidth) at centre
                   f0 + bandwidth / 2, f0 ~ U[min_freq, max_freq], applied causally from rest (as lfilter):
                   its exact frequency response times the zero-padded rFFT
    time_shift     shift by an integer s ~ U{-S..S}, S = max_shift_s * fs, filling with zeros (or circular)
    time_warp      stretch segment k of n_segments by r_k ~ U[min_scale, max_scale], then resample the
                   warped signal back to T samples (piecewise-linear time map; resample "fft": the
                   reference's scipy.signal.resample, as per-sample-length chirp-z DFTs)
    permutation    split into n_segments (np.array_split lengths) and reorder them randomly
    zero_masking   zero one contiguous span of 0..round(max_length_s * fs) samples at a uniform start
    cutout_resize  drop one of n_segments and stretch the rest back to T samples (linear or "fft")

`Augmenter` applies those named in the config's `order` (default: all six in the reference's order,
each with p = 0.5), each to a per-sample Bernoulli(p) subset of the batch (computed for the whole
batch, then selected with torch.where: selecting by index would need the number of chosen samples
on the host, i.e. a sync). docs/DEVIATIONS.md lists where they differ from the reference.
"""
from __future__ import annotations

import math
from functools import partial

import torch

from training.config import AUGMENTATION_SCHEMA
from utils import ConfigError, fill_defaults, validate


# ----------------------------------------------------------------------------- helpers
def _work_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64; lower precisions compute in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _index(u: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
    """Uniforms u in [0, 1) -> integers uniform in [0, n) (n an int or a per-sample tensor)."""
    return (u * n).long().clamp_(max=n - 1)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, C, T) sampled at integer time indices (B, T') -> (B, C, T')."""
    return x.gather(-1, index.unsqueeze(1).expand(-1, x.shape[1], -1))


def _blend(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(1 - w) x[left] + w x[right] with integer indices and weights of shape (B, T') -> (B, C, T')."""
    return torch.lerp(_take(x, left), _take(x, right), weight.unsqueeze(1))


def _interpolate(x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """x (B, C, T) read at fractional positions (B, T') in [0, T - 1] by linear interpolation."""
    left = position.floor().clamp_(0, x.shape[-1] - 2)
    index = left.long()
    return _blend(x, index, index + 1, position - left)


def _segment_bounds(T: int, n_segments: int, device) -> torch.Tensor:
    """Integer boundaries (n_segments + 1,) of an equal split of T samples (np.array_split sizes)."""
    if n_segments > T // 2:
        raise ValueError(f"n_segments={n_segments} needs segments of >= 2 samples; an epoch has {T}")
    return torch.arange(n_segments + 1, device=device) * T // n_segments


def _reference_segments(T: int, n_segments: int) -> list[tuple[int, int]]:
    """The reference's split: (start, end) of n_segments pieces of T // n_segments samples, the
    remainder in the last."""
    length = T // n_segments
    return [(k * length, (k + 1) * length if k < n_segments - 1 else T) for k in range(n_segments)]


def _resample_spectrum(X: torch.Tensor, n_in, n_out) -> torch.Tensor:
    """scipy.signal.resample's rule on a one-sided spectrum X (..., F) of n_in samples, for n_out:
    bins above m // 2 (m = min(n_in, n_out)) cleared, the unpaired bin m // 2 (m even, n_in != n_out)
    doubled when down-sampling and halved when up-sampling, all scaled by n_out / n_in. n_in and
    n_out: ints or integer tensors broadcasting against X's leading dims (..., 1)."""
    # torch.full fills on the device; torch.as_tensor of an int would copy from the host, which a CUDA
    # graph cannot capture
    n_in, n_out = (n if torch.is_tensor(n) else torch.full((), n, device=X.device) for n in (n_in, n_out))
    k = torch.arange(X.shape[-1], device=X.device)
    m = torch.minimum(n_in, n_out)
    unpaired = (k == m // 2) & (m % 2 == 0) & (n_in != n_out)
    real = X.real.dtype
    factor = torch.where(unpaired, torch.where(n_out < n_in, 2.0, 0.5), 1.0).to(real) * (k <= m // 2)
    return X * (factor * n_out.to(real) / n_in.to(real))


def _chirp_dft(a: torch.Tensor, period: torch.Tensor, n_out: int, sign: int) -> torch.Tensor:
    """out[..., k] = sum_p a[..., p] exp(sign 2 pi i k p / period) for k < n_out, with a per-sample
    integer DFT length `period` (..., 1), in fixed shapes (Bluestein: kp = (k^2 + p^2 - (k - p)^2) / 2,
    the convolution by FFT). Phases come from n^2 mod 2 period in integers, so they stay exact."""
    P = a.shape[-1]
    n_fft = 1 << (P + n_out - 2).bit_length()  # >= P + n_out - 1: the needed outputs do not wrap
    work = a.real.dtype

    def chirp(n: torch.Tensor) -> torch.Tensor:  # exp(sign i pi n^2 / period)
        angle = ((n * n) % (2 * period)).to(work) * (sign * math.pi) / period.to(work)
        return torch.complex(angle.cos(), angle.sin())

    arange = partial(torch.arange, device=a.device)
    kernel = chirp(arange(-(P - 1), n_out)).conj()  # exp(-sign i pi d^2 / period), d = k - p
    spectrum = torch.fft.fft(a * chirp(arange(P)), n=n_fft) * torch.fft.fft(kernel, n=n_fft)
    return chirp(arange(n_out)) * torch.fft.ifft(spectrum)[..., P - 1 : P - 1 + n_out]


# ----------------------------------------------------------------------------- augmentations
# Each maps x (B, C, T) and its uniforms u (B, k) in [0, 1) (k per augmentation: UNIFORMS) to the
# augmented batch; u in x's working precision (float64 for float64 x, float32 otherwise).
def _notch_radius(fs: int, centre: float, bandwidth: float) -> float:
    """Largest pole modulus of scipy.signal.iirnotch(centre, centre / bandwidth, fs): its impulse
    response decays as radius^n."""
    gain = 1 / (1 + math.tan(math.pi * bandwidth / fs))
    half_a1, a2 = gain * abs(math.cos(2 * math.pi * centre / fs)), 2 * gain - 1  # a = [1, -2 half_a1, a2]
    discriminant = half_a1 ** 2 - a2
    return math.sqrt(a2) if discriminant < 0 else half_a1 + math.sqrt(discriminant)


def band_stop(x, u, *, fs: int, min_freq: float, max_freq: float, bandwidth: float):
    """The reference's band-stop: lfilter(iirnotch(f_c, f_c / bandwidth, fs)), f_c = f0 + bandwidth / 2,
    f0 = min_freq + (max_freq - min_freq) u, the filter starting at rest.

    The notch's frequency response is H(w) = c / (c + j beta sin w), c = cos w - cos w_c, beta =
    tan(pi bandwidth / fs). Its impulse response falls below 1e-12 within `pad` samples, so the
    first T samples of irfft(rfft(x zero-padded by pad) H) are the causal filter's output.
    """
    T, work = x.shape[-1], _work_dtype(x)
    radius = max(_notch_radius(fs, f + bandwidth / 2, bandwidth) for f in (min_freq, max_freq))
    n_fft = T + math.ceil(math.log(1e-12) / math.log(radius))
    omega = torch.arange(n_fft // 2 + 1, device=x.device, dtype=work) * (2 * math.pi / n_fft)
    centre = min_freq + (max_freq - min_freq) * u + bandwidth / 2  # (B, 1) Hz
    c = omega.cos() - (centre * (2 * math.pi / fs)).cos().unsqueeze(-1)  # (B, 1, n_fft // 2 + 1)
    b = math.tan(math.pi * bandwidth / fs) * omega.sin()
    response = torch.complex(c, -b) * (c / (c.square() + b.square()))  # c (c - j b) / |c + j b|^2
    spectrum = torch.fft.rfft(x.to(work), n=n_fft, dim=-1)
    return torch.fft.irfft(spectrum * response, n=n_fft, dim=-1)[..., :T].to(x.dtype)


def time_shift(x, u, *, fs: int, max_shift_s: float, fill: str):
    """Shift by s = floor(u (2S + 1)) - S samples, S = max_shift_s fs: out[t] = x[t - s], 0 where t - s
    leaves [0, T) (fill 'zeros', as scipy.ndimage.shift with mode 'constant') or x[(t - s) mod T] ('circular')."""
    T = x.shape[-1]
    max_shift = round(max_shift_s * fs)
    shift = _index(u, 2 * max_shift + 1) - max_shift  # (B, 1)
    source = torch.arange(T, device=x.device) - shift  # (B, T): t - s
    shifted = _take(x, source % T)
    if fill == "circular":
        return shifted
    return shifted.masked_fill(((source < 0) | (source >= T)).unsqueeze(1), 0)


def zero_masking(x, u, *, fs: int, max_length_s: float):
    """Zero one contiguous span of L ~ U{0..M} samples, M = round(max_length_s fs), starting at
    U{0..T - L} (u: length, start)."""
    T = x.shape[-1]
    max_length = min(round(max_length_s * fs), T)
    length = _index(u[:, :1], max_length + 1)  # (B, 1)
    offset = torch.arange(T, device=x.device) - _index(u[:, 1:], T - length + 1)  # t - start
    return x.masked_fill(((offset >= 0) & (offset < length)).unsqueeze(1), 0)


def time_warp(x, u, *, fs: int, n_segments: int, min_scale: float, max_scale: float, resample: str = "linear"):
    """Stretch/compress each of n equal segments by a random factor, then resample back to T samples.

    linear  segment k gets an output span [a_k, b_k] of length proportional to r_k = min_scale +
            (max_scale - min_scale) u_k (the spans tile [0, T - 1]); output sample t reads the input at

                position(t) = (T - 1) / n * sum_k clamp((t - a_k) / (b_k - a_k), 0, 1),

            an increasing piecewise-linear time map, by linear interpolation.
    fft     the reference's: each segment FFT-resampled (scipy.signal.resample) to int(len * r_k)
            samples, the joined segments FFT-resampled back to T (see _time_warp_fft).
    """
    if resample == "fft":
        return _time_warp_fft(x, u, n_segments=n_segments, min_scale=min_scale, max_scale=max_scale)
    T, work = x.shape[-1], _work_dtype(x)
    knots = torch.nn.functional.pad((min_scale + (max_scale - min_scale) * u).cumsum(1), (1, 0))
    knots = (knots * ((T - 1) / knots[:, -1:])).unsqueeze(-1)  # (B, n + 1, 1): a_0 = 0 ... b_{n-1} = T - 1
    start, inverse_length = knots[:, :-1], 1 / knots.diff(dim=1)
    t = torch.arange(T, device=x.device, dtype=work)
    position = ((t - start) * inverse_length).clamp_(0, 1).sum(1) * ((T - 1) / n_segments)  # (B, T)
    return _interpolate(x.to(work), position).to(x.dtype)


def _time_warp_fft(x, u, *, n_segments: int, min_scale: float, max_scale: float):
    """The reference's time warp in fixed shapes: segment k (n_k samples, the reference's split) becomes
    m_k = max(1, floor(n_k r_k)) samples, scipy.signal.resample(segment, m_k); the joined L = sum m_k
    samples become T, scipy.signal.resample(joined, T). Both resamplings run as per-sample-length DFTs
    (_chirp_dft), so no shape depends on the random factors."""
    T, work = x.shape[-1], _work_dtype(x)
    scale = min_scale + (max_scale - min_scale) * u.to(work)  # (B, n)
    segments = _reference_segments(T, n_segments)
    longest = [max(1, math.floor((end - start) * max_scale)) for start, end in segments]  # the largest m_k
    capacity = sum(longest)
    z = x.new_zeros(x.shape[0], x.shape[1], capacity + 1, dtype=work)  # the joined signal; slot `capacity` takes padding
    length = torch.zeros(x.shape[0], 1, 1, dtype=torch.long, device=x.device)  # L of the segments joined so far
    for k, ((start, end), most) in enumerate(zip(segments, longest)):
        n_k = end - start
        m = (n_k * scale[:, k : k + 1]).floor().long().clamp_(1, most).unsqueeze(1)  # (B, 1, 1)
        spectrum = _resample_spectrum(torch.fft.rfft(x[..., start:end].to(work)), n_k, m)
        bins = torch.arange(spectrum.shape[-1], device=x.device)
        spectrum = spectrum * torch.where((bins == 0) | (2 * bins == m), 1.0, 2.0) / m  # irfft's Hermitian weights
        segment = _chirp_dft(spectrum, m, most, +1).real  # (B, C, most): its first m samples are the segment
        j = torch.arange(most, device=x.device)
        z.scatter_add_(-1, torch.where(j < m, length + j, capacity).expand_as(segment), segment)
        length = length + m
    spectrum = _chirp_dft(z[..., :capacity].to(torch.promote_types(work, torch.complex64)), length, T // 2 + 1, -1)
    return torch.fft.irfft(_resample_spectrum(spectrum, length, T), n=T).to(x.dtype)


def permutation(x, u, *, fs: int, n_segments: int):
    """Split into n_segments (np.array_split sizes) and reorder them by argsort(u) (B, n)."""
    B, T = x.shape[0], x.shape[-1]
    bounds = _segment_bounds(T, n_segments, x.device)
    order = u.argsort(dim=1)  # output slot -> input segment
    source_start, length = bounds[order], bounds[order + 1] - bounds[order]  # (B, n)
    slot_start = length.cumsum(1) - length
    # output sample t of slot j reads source_start_j + (t - slot_start_j); each row's slots fill T samples
    shift = torch.repeat_interleave((source_start - slot_start).flatten(), length.flatten(), output_size=B * T)
    return _take(x, shift.view(B, T) + torch.arange(T, device=x.device))


def cutout_resize(x, u, *, fs: int, n_segments: int, resample: str = "linear"):
    """Remove segment floor(u n) of n_segments and stretch the remaining samples back to T.

    linear  the kept samples, joined, form a sequence of K = T - len(cut) samples; output sample t
            reads it at position t (K - 1) / (T - 1) by linear interpolation.
    fft     the reference's: scipy.signal.resample(joined, T), segments as the reference splits them;
            computed for every choice of the cut segment (fixed shapes), then selected per sample.
    """
    T, work = x.shape[-1], _work_dtype(x)
    if resample == "fft":
        choices = []
        for start, end in _reference_segments(T, n_segments):
            kept = torch.cat([x[..., :start], x[..., end:]], dim=-1).to(work)
            spectrum = _resample_spectrum(torch.fft.rfft(kept), kept.shape[-1], T)
            choices.append(torch.fft.irfft(spectrum, n=T))  # zero-pads the spectrum to T // 2 + 1 bins
        cut = _index(u, n_segments)  # (B, 1)
        return torch.stack(choices, 1)[torch.arange(x.shape[0], device=x.device), cut[:, 0]].to(x.dtype)
    bounds = _segment_bounds(T, n_segments, x.device)
    cut = _index(u, n_segments)  # (B, 1)
    cut_start, cut_length = bounds[cut], bounds[cut + 1] - bounds[cut]
    position = torch.arange(T, device=x.device, dtype=work) * ((T - cut_length - 1).to(work) / (T - 1))  # (B, T)
    left = position.floor().clamp_(max=(T - cut_length - 2).to(work))  # index into the kept sequence

    def original(index):  # index into the kept sequence -> index into x
        return index + cut_length * (index >= cut_start)

    index = left.long()
    return _blend(x.to(work), original(index), original(index + 1), position - left).to(x.dtype)


AUGMENTATION_FUNCTIONS = {
    "band_stop": band_stop,
    "time_shift": time_shift,
    "time_warp": time_warp,
    "permutation": permutation,
    "zero_masking": zero_masking,
    "cutout_resize": cutout_resize,
}
UNIFORMS = {  # uniforms per sample each augmentation needs, from its parameters
    "band_stop": lambda params: 1,
    "time_shift": lambda params: 1,
    "time_warp": lambda params: params["n_segments"],
    "permutation": lambda params: params["n_segments"],
    "zero_masking": lambda params: 2,
    "cutout_resize": lambda params: 1,
}


# ----------------------------------------------------------------------------- composition
def _range_problems(config: dict, fs: int) -> list[str]:
    """Problems between the values of a default-filled, valid augmentation config."""
    band, warp, path = config["band_stop"], config["time_warp"], "ssl.params.augmentations"
    problems = []
    if band["min_freq"] > band["max_freq"]:
        problems.append(f"{path}.band_stop: min_freq {band['min_freq']} > max_freq {band['max_freq']}")
    if band["max_freq"] + band["bandwidth"] / 2 >= fs / 2:
        problems.append(f"{path}.band_stop: the highest notch centre max_freq + bandwidth / 2 = "
                        f"{band['max_freq'] + band['bandwidth'] / 2} Hz must lie below fs / 2 = {fs / 2} Hz")
    if warp["min_scale"] > warp["max_scale"]:
        problems.append(f"{path}.time_warp: min_scale {warp['min_scale']} > max_scale {warp['max_scale']}")
    return problems


class Augmenter:
    """The augmentations of `aug_cfg` (config["ssl"]["params"]["augmentations"]).

    Missing values take the AUGMENTATION_SCHEMA defaults (the reference's). The augmentations named
    in `order` are applied in that order, each with its p; one not named, or with p = 0, is not. A
    call draws every uniform it needs, (B, 1 + k) per augmentation (the first decides whether a
    sample is augmented), in one torch.rand on x's device from `generator`.
    """

    def __init__(self, aug_cfg: dict, fs: int = 100):
        problems = validate(aug_cfg, AUGMENTATION_SCHEMA, "ssl.params.augmentations")
        config = fill_defaults(aug_cfg, AUGMENTATION_SCHEMA)
        problems = problems or _range_problems(config, fs)
        if problems:
            raise ConfigError(problems)
        self.steps = []  # (name, p, augmentation, its columns of the uniforms)
        self.n_uniforms = 0
        for name in config["order"]:
            params = dict(config[name])
            p = params.pop("p")
            if p > 0:
                k = 1 + UNIFORMS[name](params)
                columns = slice(self.n_uniforms, self.n_uniforms + k)
                self.steps.append((name, p, partial(AUGMENTATION_FUNCTIONS[name], fs=fs, **params), columns))
                self.n_uniforms += k

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, C, T) floating point -> augmented batch, same shape/dtype/device (x itself if none applies)."""
        if x.ndim != 3 or not x.is_floating_point():
            raise ValueError(f"Augmenter expects a floating (B, C, T) batch, got {x.dtype} {tuple(x.shape)}")
        if generator is not None and generator.device.type != x.device.type:
            raise ValueError(f"generator is on {generator.device}, the batch on {x.device}")
        u = torch.rand(x.shape[0], self.n_uniforms, generator=generator, device=x.device, dtype=_work_dtype(x))
        return self.apply(x, u)

    def apply(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The augmentation as a function of x (B, C, T) and its uniforms u (B, n_uniforms) alone
        (no RNG inside, so `torch.compile(augmenter.apply, fullgraph=True)` can fuse it)."""
        for _, p, augment, columns in self.steps:
            draw = u[:, columns]
            augmented = augment(x, draw[:, 1:])
            x = augmented if p == 1 else torch.where((draw[:, :1] < p).unsqueeze(-1), augmented, x)
        return x

    def __repr__(self) -> str:
        return "Augmenter(" + ", ".join(f"{name}(p={p})" for name, p, _, _ in self.steps) + ")"
