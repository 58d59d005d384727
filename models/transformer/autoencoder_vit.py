"""AutoEncoderViT: a masked-autoencoder Transformer over the tokens of one 30-s epoch (after MAE,
facebookresearch/mae models_mae.py; the loss is in loss.py).

Tokenisation: the epoch x (B, C, T) is cut into L frames of W samples every S samples (unfold):

    default              non-overlapping raw patches of patch_size samples (W = S = patch_size = 100:
                         L = 30 one-second tokens); patch_size = T gives the reference's single token
    use_signal_backbone  frames of window_s every step_s seconds (the reference config's 5 s every
                         0.5 s: L = 51, W = 500), each turned into a feature vector by the SignalBackbone

Widths, heads and depths are the reference config's. Shapes with the defaults:

    x          (B, 1, 3000)
    frames     (B, 30, 1, 100)          target of token masking: (B, 30, 100)
    tokens     (B, 30, 128)             linear projection of the patches + fixed sin-cos positions
    encoder    (B, 1 + n_keep, 128)     CLS token + the visible tokens (n_keep = L without masking);
                                        6 pre-norm blocks of 8 heads
    latent     (B, 128)                 the encoder's CLS output (latent_projection: a linear map of it)
    decoder    (B, 1 + 30, 128)         latent as the decoder's CLS, visible tokens, mask tokens;
                                        8 blocks of 4 heads
    pred       (B, 30, 100)             samples of every token
    recon      (B, 1, 3000)             token predictions put back in place (overlaps averaged)

cls_token false is the reference's `use_cls: false`: no CLS token, the latent is the first token's output,
and the decoder decodes the encoder's tokens alone (encoder (B, L, 128), decoder (B, L, 128)). It needs every
token visible, so it takes sample masking ('random', 'span'), not token masking.

Token masking (MAE) needs tokens that do not overlap: with overlapping frames a dropped frame's samples
stay visible inside its kept neighbours, so the loss would score samples the encoder sees.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.masking import choose_tokens, gather_tokens
from models.transformer.signal_backbone import SignalBackbone
from utils import Field


def sincos_positions(length: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sin-cos position embeddings (1, 1 + length, dim); row 0 (the CLS token) is zero."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega[None]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float().unsqueeze(0)


def transformer_stack(dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> nn.TransformerEncoder:
    """`depth` pre-norm Transformer blocks (SDPA attention) and a final LayerNorm: (B, N, dim) -> (B, N, dim).

    The blocks of timm's ViT as the reference uses them: qkv bias, GELU MLP, LayerNorm eps 1e-6."""
    layer = nn.TransformerEncoderLayer(dim, heads, round(dim * mlp_ratio), dropout, activation="gelu",
                                       layer_norm_eps=1e-6, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim, eps=1e-6), enable_nested_tensor=False)


def overlap_average(frames: torch.Tensor, length: int, window: int, step: int) -> torch.Tensor:
    """Inverse of framing: frames (B, L, C * W) -> signal (B, C, length), overlaps averaged."""
    columns = frames.transpose(1, 2)  # (B, C * W, L), channel-major as F.fold expects
    fold = dict(output_size=(1, length), kernel_size=(1, window), stride=(1, step))
    summed = F.fold(columns, **fold)
    counts = F.fold(torch.ones_like(columns[:1, :window]), **fold)
    return (summed / counts).squeeze(2)


class MAEDecoder(nn.Module):
    """(encoder tokens (B, 1 + n_keep, D), latent, ids_restore or None) -> pred (B, L, P).

    The latent (not the raw CLS output) becomes the decoder's CLS token, so masked prediction
    also trains the latent projection that CRL, the probe and the embeddings use. Without the CLS token
    (cls_token false) it decodes the encoder's tokens (B, L, D) alone, as the reference does.
    """

    def __init__(self, embed_dim, latent_dim, num_tokens, token_size, dim, depth, heads, mlp_ratio, dropout,
                 cls_token=True):
        super().__init__()
        self.embed = nn.Linear(embed_dim, dim)
        self.from_latent = nn.Linear(latent_dim, dim) if cls_token else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.register_buffer("positions", sincos_positions(num_tokens, dim), persistent=False)
        self.blocks = transformer_stack(dim, depth, heads, mlp_ratio, dropout)
        self.pred = nn.Linear(dim, token_size)

    def forward(self, encoded, latent, ids_restore=None):
        if self.from_latent is None:  # no CLS token (the reference's use_cls false): every token, no latent
            return self.pred(self.blocks(self.embed(encoded) + self.positions[:, 1:]))
        tokens = self.embed(encoded[:, 1:])
        if ids_restore is not None:  # append mask tokens, then undo the shuffle of choose_tokens
            batch, length = ids_restore.shape
            masked = self.mask_token.to(tokens.dtype).expand(batch, length - tokens.shape[1], -1)
            tokens = torch.cat([tokens, masked], dim=1)
            tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        cls = self.from_latent(latent).unsqueeze(1)
        h = torch.cat([cls, tokens], dim=1) + self.positions
        return self.pred(self.blocks(h)[:, 1:])


class AutoEncoderViT(nn.Module):
    """The Transformer backbone (see the module docstring)."""

    PRESETS = {  # "small": this project's earlier encoder (256-D, 4 layers, decoder depth 2, frames every 2.5 s)
        "reference": {},
        "small": {"use_signal_backbone": True, "step_s": 2.5, "embed_dim": 256, "depth": 4, "decoder_depth": 2,
                  "latent_projection": True},
    }
    PARAMS = {
        "preset": Field(str, "reference", choices=tuple(PRESETS), doc="named architecture supplying the defaults"),
        "in_channels": Field(int, 1, min=1),
        "input_length": Field(int, 3000, min=1, doc="samples per epoch"),
        "sampling_rate": Field(int, 100, min=1, doc="Hz; converts window_s and step_s to samples"),
        "use_signal_backbone": Field(bool, False, doc="frame features from the SignalBackbone; false: raw patches"),
        "window_s": Field(float, 5.0, min=0.01, doc="frame length in seconds (signal backbone)"),
        "step_s": Field(float, 0.5, min=0.01, doc="frame step in seconds (signal backbone); frames must tile the epoch"),
        "backbone_kernel_sizes": Field(list, [3, 5, 7], item=Field(int, min=1), doc="one branch per kernel size"),
        "backbone_width": Field(int, 32, min=1, doc="channels of every branch"),
        "backbone_depth": Field(int, 3, min=0, doc="residual blocks per branch (each halves the length)"),
        "patch_size": Field(int, 100, min=1, doc="samples per raw patch (use_signal_backbone false); T = one token"),
        "embed_dim": Field(int, 128, min=2),
        "depth": Field(int, 6, min=1),
        "num_heads": Field(int, 8, min=1),
        "decoder_embed_dim": Field(int, 128, min=2),
        "decoder_depth": Field(int, 8, min=1),
        "decoder_num_heads": Field(int, 4, min=1),
        "mlp_ratio": Field(float, 4.0, min=0.1, doc="MLP width / embedding width (encoder and decoder)"),
        "dropout": Field(float, 0.0, min=0, max=0.99),
        "latent_projection": Field(bool, False, doc="latent = linear map of the CLS output (else the CLS output itself)"),
        "cls_token": Field(bool, True, doc="false: no CLS token; the latent is the first token's output and the decoder "
                                           "decodes the encoder's tokens alone (the reference's use_cls: false)"),
        "latent_dim": Field(int, 128, min=1, doc="equals embed_dim without latent_projection"),
    }

    @classmethod
    def consistency_problems(cls, params: dict, path: str) -> list[str]:
        problems = []
        for dim, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            if params[dim] % params[heads]:
                problems.append(f"{path}.{heads}: {params[heads]} does not divide {dim} {params[dim]}")
            if params[dim] % 2:
                problems.append(f"{path}.{dim}: must be even (sin-cos positions), got {params[dim]}")
        if not params["cls_token"] and params["latent_projection"]:
            problems.append(f"{path}.cls_token: false decodes the encoder's tokens alone, so the decoder would never "
                            "train latent_projection; set latent_projection false")
        if not params["latent_projection"] and params["latent_dim"] != params["embed_dim"]:
            problems.append(f"{path}.latent_dim: without latent_projection the latent is the CLS output, so latent_dim "
                            f"must equal embed_dim {params['embed_dim']}, got {params['latent_dim']}")
        length = params["input_length"]
        if not params["use_signal_backbone"]:
            if length % params["patch_size"]:
                problems.append(f"{path}.patch_size: {params['patch_size']} does not divide input_length {length}")
            return problems
        fs = params["sampling_rate"]
        for key in ("window_s", "step_s"):
            if not math.isclose(params[key] * fs, round(params[key] * fs)):
                problems.append(f"{path}.{key}: {params[key]} s is not a whole number of samples at {fs} Hz")
        window, step = round(params["window_s"] * fs), round(params["step_s"] * fs)
        if window > length or step > window or (length - window) % step:
            problems.append(f"{path}.step_s: windows of {params['window_s']} s every {params['step_s']} s do not "
                            f"tile an epoch of {length / fs:g} s (need step <= window and (epoch - window) a "
                            "multiple of step)")
        return problems

    def __init__(self, in_channels, input_length, sampling_rate, use_signal_backbone, window_s, step_s,
                 backbone_kernel_sizes, backbone_width, backbone_depth, patch_size, embed_dim, depth, num_heads,
                 decoder_embed_dim, decoder_depth, decoder_num_heads, mlp_ratio, dropout, latent_projection, latent_dim,
                 cls_token, build_decoder=True):
        super().__init__()
        if use_signal_backbone:
            self.window, self.step = round(window_s * sampling_rate), round(step_s * sampling_rate)
            self.signal_backbone = SignalBackbone(in_channels, backbone_width, backbone_kernel_sizes, backbone_depth)
            token_features = self.signal_backbone.out_features
        else:
            self.window = self.step = patch_size
            self.signal_backbone = None
            token_features = in_channels * patch_size
        self.input_length = input_length
        self.num_tokens = (input_length - self.window) // self.step + 1
        self.token_size = in_channels * self.window
        self.latent_dim = latent_dim

        self.patch_embed = nn.Linear(token_features, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if cls_token else None
        self.register_buffer("positions", sincos_positions(self.num_tokens, embed_dim), persistent=False)
        self.encoder = transformer_stack(embed_dim, depth, num_heads, mlp_ratio, dropout)
        self.to_latent = nn.Linear(embed_dim, latent_dim) if latent_projection else nn.Identity()
        self.decoder = None
        if build_decoder:
            self.decoder = MAEDecoder(embed_dim, latent_dim, self.num_tokens, self.token_size, decoder_embed_dim,
                                      decoder_depth, decoder_num_heads, mlp_ratio, dropout, cls_token)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, AutoEncoderViT) and module.cls_token is not None:
            nn.init.normal_(module.cls_token, std=0.02)
        elif isinstance(module, MAEDecoder) and module.mask_token is not None:
            nn.init.normal_(module.mask_token, std=0.02)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T) -> frames (B, L, C, W)."""
        if x.shape[-1] != self.input_length:
            raise ValueError(f"this Transformer takes epochs of input_length={self.input_length} samples, "
                             f"got {x.shape[-1]} (backbone.params.input_length)")
        return x.unfold(-1, self.window, self.step).transpose(1, 2)

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float | None = None, generator=None):
        """x (B, C, T) -> (encoded (B, 1 + n_keep, D), mask (B, L) or None, ids_restore (B, L) or None);
        encoded is (B, L, D) without the CLS token.

        With `mask_ratio`, a random round((1 - mask_ratio) * L) frames of each epoch are kept (MAE) and
        only those are embedded: the dropped ones would be discarded after the embedding anyway, so the
        frame backbone skips them (its BatchNorm statistics come from the visible frames). Without it
        every frame is encoded.
        """
        frames = self.frames(x)
        positions = self.positions[:, 1:].expand(x.shape[0], -1, -1)
        mask = ids_restore = None
        if mask_ratio is not None:
            ids_keep, mask, ids_restore = choose_tokens(x.shape[0], self.num_tokens, mask_ratio, x.device, generator)
            frames, positions = gather_tokens(frames, ids_keep), gather_tokens(positions, ids_keep)
        features = self.signal_backbone(frames) if self.signal_backbone is not None else frames.flatten(2)
        tokens = self.patch_embed(features) + positions
        if self.cls_token is None:
            return self.encoder(tokens), mask, ids_restore
        cls = (self.cls_token + self.positions[:, :1]).expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        return self.encoder(torch.cat([cls, tokens], dim=1)), mask, ids_restore

    def latent(self, encoded: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, 1 + n, D) -> latent (B, latent_dim): the CLS token's output (or its projection);
        without the CLS token, the first token's output."""
        return self.to_latent(encoded[:, 0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T) -> latent (B, latent_dim), every token visible."""
        return self.latent(self.forward_encoder(x)[0])

    def forward_decoder(self, encoded, latent, ids_restore=None) -> torch.Tensor:
        """(encoded (B, 1 + n_keep, D), latent (B, latent_dim), ids_restore) -> pred (B, L, C * W)."""
        return self.decoder(encoded, latent, ids_restore)

    def to_signal(self, pred: torch.Tensor) -> torch.Tensor:
        """pred (B, L, C * W) -> reconstruction (B, C, T), overlapping frames averaged."""
        return overlap_average(pred, self.input_length, self.window, self.step)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, T) -> (reconstruction (B, C, T), latent (B, latent_dim)), every token visible."""
        encoded = self.forward_encoder(x)[0]
        latent = self.latent(encoded)
        return self.to_signal(self.forward_decoder(encoded, latent)), latent

    def token_masking_problem(self, mask_ratio: float) -> str | None:
        """Why token masking at `mask_ratio` cannot run with this tokenisation, or None."""
        n_keep = self.num_tokens - round(mask_ratio * self.num_tokens)
        if self.cls_token is None:
            return ("'token' masking needs the CLS token (backbone.params.cls_token true): without it the latent is "
                    "the first token's output, which token masking would drop; use masking 'random' or 'span'")
        if self.num_tokens < 2:
            return (f"'token' masking needs several tokens, but this backbone makes {self.num_tokens} per epoch "
                    "(patch_size = input_length); use masking 'random' or 'span'")
        if self.step < self.window:
            return (f"'token' masking needs tokens that do not overlap, but frames of {self.window} samples every "
                    f"{self.step} leave a dropped frame's samples visible in its kept neighbours; use raw patches "
                    "(use_signal_backbone false), step_s = window_s, or masking 'span' / 'random' (in the time domain)")
        if n_keep < 1 or n_keep == self.num_tokens:
            return (f"'token' masking with masking_ratio {mask_ratio} keeps {n_keep} of {self.num_tokens} tokens; "
                    "choose a ratio that masks some but not all tokens")
        return None

    def forward_token_masking(self, x: torch.Tensor, mask_ratio: float, generator=None) -> dict:
        """MAE: x (B, C, T) -> pred, target (B, L, C * W), mask (B, L) (1 = dropped), recon (B, C, T), latent."""
        encoded, mask, ids_restore = self.forward_encoder(x, mask_ratio, generator)
        latent = self.latent(encoded)
        pred = self.forward_decoder(encoded, latent, ids_restore)
        target = self.frames(x).flatten(2)
        return {"pred": pred, "target": target, "mask": mask, "recon": self.to_signal(pred), "latent": latent}
