"""Encoders, masking and the model factory (CPU, small batches)."""
import pytest
import torch
import torch.nn.functional as F
import yaml

from models import BACKBONES, build_model
from models.cnn_attention.cnn_attention import SelfAttentionBlock
from models.masking import choose_tokens, gather_tokens, mask_input, random_sample_mask, span_mask
from models.transformer.autoencoder_vit import overlap_average
from training.config import load_config
from utils import REPO_ROOT as REPO, ConfigError

TYPES = tuple(BACKBONES)
ONE_TOKEN = {"use_signal_backbone": False, "patch_size": 3000}
FRAMES = {"use_signal_backbone": True, "backbone_width": 4}  # the frame backbone, cheap where its width does not matter
LIGHT = {**FRAMES, "step_s": 1.25}  # 21 overlapping frames of 5 s


def model_of(kind, ssl="Hybrid", params=None, **sections):
    torch.manual_seed(0)
    return build_model({"backbone": {"type": kind, "params": params or {}}, "ssl": {"type": ssl}, **sections})


def epochs(batch=4, length=3000):
    return torch.randn(batch, 1, length, generator=torch.Generator().manual_seed(1))


def encoder_input_shapes(model):
    """Records the (B, N, D) token tensor each call of a Transformer encoder receives."""
    shapes = []
    model.backbone.encoder.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    return shapes


# ----------------------------------------------------------------------------- shapes and gradients
@pytest.mark.parametrize("kind", TYPES)
def test_latent_and_reconstruction_shapes(kind):
    model, x = model_of(kind), epochs()
    assert model.encode(x).shape == (4, 128)
    out = model.forward_mp(x, 0.5, "span", 50)
    assert out["latent"].shape == (4, 128)
    assert out["recon"].shape == (4, 1, 3000)
    assert out["pred"].shape == out["target"].shape == (4, 3000, 1)
    assert out["mask"].shape == (4, 3000)
    assert torch.equal(out["target"], x.transpose(1, 2))
    assert model.project(model.encode(x)).shape == (4, 128)


@pytest.mark.parametrize("kind", TYPES)
def test_hybrid_gradients_reach_every_parameter(kind):
    model, x = model_of(kind), epochs()
    masking = "token" if kind == "Transformer" else "span"
    out = model.forward_mp(x, 0.5, masking, 50)
    mp = (((out["pred"] - out["target"]) ** 2).mean(-1) * out["mask"]).sum() / out["mask"].sum()
    (mp + model.project(model.encode(x)).pow(2).mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("kind, params", [("CNN", {"preset": "small"}), ("Transformer", {"latent_projection": True})])
def test_mp_alone_trains_the_latent_projection(kind, params):
    """Where the latent is a projection, it feeds the decoder, so MP trains the latent the probe reads."""
    model = model_of(kind, "MP", params)
    model.forward_mp(epochs(2), 0.5, "random", 1)["pred"].pow(2).mean().backward()
    assert all(p.grad.abs().sum() > 0 for p in model.backbone.to_latent.parameters())


# ----------------------------------------------------------------------------- the reference's architectures
REFERENCE_PARAMETERS = {  # ../shared/reference/README.md, counted with torch on the reference's own models
    "CNN": (1_142_973, 1_751_039),
    "CNN_Attention": (1_472_957, 2_163_327),
}


@pytest.mark.parametrize("kind", ["CNN", "CNN_Attention"])
def test_encoder_and_decoder_parameter_counts_equal_the_reference(kind):
    backbone = model_of(kind, "MP").backbone
    counts = tuple(sum(p.numel() for p in part.parameters()) for part in (backbone.encoder, backbone.decoder))
    assert counts == REFERENCE_PARAMETERS[kind]
    assert sum(p.numel() for p in model_of(kind, "CRL").parameters()) == REFERENCE_PARAMETERS[kind][0]  # no head


@pytest.mark.parametrize("kind", ["CNN", "CNN_Attention"])
def test_reference_pyramid_shapes_and_unit_norm_latent(kind):
    model, x = model_of(kind, "MP").eval(), epochs(3)
    c3, c4, c5 = model.backbone.pyramid(x)
    assert (c3.shape, c4.shape, c5.shape) == ((3, 192, 120), (3, 256, 24), (3, 128, 6))
    z = model.encode(x)
    assert z.shape == (3, 128)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(z, F.normalize(c5.mean(-1), dim=1))  # the pooled c5, L2-normalised
    assert model.backbone.reconstruct(x)[0].shape == (3, 1, 3000)


def test_reference_blocks_conv_layers_prelu_and_gate():
    encoder = model_of("CNN", "CRL").backbone.encoder
    convs = [[m for m in block.modules() if isinstance(m, torch.nn.Conv1d)] for block in encoder.blocks]
    assert [len(c) for c in convs] == [2, 2, 3, 3, 3]
    assert [c[-1].out_channels for c in convs] == [64, 128, 192, 256, 128]
    assert all(conv.bias is not None and conv.kernel_size == (3,) for c in convs for conv in c)
    assert [pool.kernel_size for pool in encoder.pools] == [5, 5, 5, 4]
    assert all(isinstance(block.activation, torch.nn.PReLU) for block in encoder.blocks)


def test_reference_transformer_widths_heads_depths():
    vit = model_of("Transformer", "MP").backbone
    assert (len(vit.encoder.layers), vit.encoder.layers[0].self_attn.embed_dim, vit.encoder.layers[0].self_attn.num_heads) == (6, 128, 8)
    decoder = vit.decoder.blocks
    assert (len(decoder.layers), decoder.layers[0].self_attn.embed_dim, decoder.layers[0].self_attn.num_heads) == (8, 128, 4)
    assert vit.signal_backbone is None and vit.num_tokens == 30  # real tokens: 1-s patches
    frames = model_of("Transformer", "CRL", {"use_signal_backbone": True}).backbone
    assert (frames.window, frames.step, frames.num_tokens) == (500, 50, 51)  # the reference config's 5 s every 0.5 s


def test_small_presets_stay_available_and_explicit_params_override_them():
    small = model_of("CNN", "CRL", {"preset": "small"}).backbone
    assert small.widths == [16, 32, 64, 128, 256] and small.to_latent is not None
    assert model_of("CNN", "CRL", {"preset": "small", "widths": [8, 8, 8, 8, 8]}).backbone.widths == [8] * 5
    vit = model_of("Transformer", "CRL", {"preset": "small"}).backbone
    assert vit.encoder.layers[0].self_attn.embed_dim == 256 and len(vit.encoder.layers) == 4 and vit.step == 250


def test_supervised_gradients_reach_every_parameter():
    model, x = model_of("CNN_Attention", "Supervised"), epochs()
    logits = model.classify(model.encode(x))
    assert logits.shape == (4, 5)
    F.cross_entropy(logits, torch.arange(4)).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("kind", TYPES)
def test_crl_build_has_no_decoder(kind):
    model = model_of(kind, "CRL")
    assert not model.has_decoder and model.backbone.decoder is None and model.classifier is None
    assert not any("decoder" in name for name, _ in model.named_parameters())
    with pytest.raises(RuntimeError, match="without a decoder"):
        model.forward_mp(epochs(), 0.5, "span", 50)
    supervised = model_of(kind, "Supervised")
    assert supervised.projection_head is None and supervised.backbone.decoder is None


# ----------------------------------------------------------------------------- CNN
def test_cnn_reconstructs_any_length_exactly():
    model = model_of("CNN", "MP", {"preset": "small"}).eval()
    recon, _ = model.backbone.reconstruct(epochs(2, 2999))  # pools ceil 2999 -> 600 -> 120 -> 40 -> 20
    assert recon.shape == (2, 1, 2999)


def test_cnn_widths_and_pools_from_params():
    params = {"widths": [8, 8, 24, 32], "layers_per_block": [1, 1, 2, 2], "pool_sizes": [4, 3, 5], "kernel_size": 7,
              "latent_dim": 32}
    model = model_of("CNN", "MP", params)
    assert [s.shape[1:] for s in model.backbone.encoder(epochs(2))] == [(8, 3000), (8, 750), (24, 250), (32, 50)]
    assert model.encode(epochs(2)).shape == (2, 32)
    assert model.backbone.encoder.blocks[0].convs[0].kernel_size == (7,)


@pytest.mark.parametrize("stages", [[4, 5], [2, 3]])
def test_attention_exactly_at_configured_stages(stages):
    model = model_of("CNN_Attention", "MP", {"attention_stages": stages})
    encoder, decoder = model.backbone.encoder.blocks, model.backbone.decoder.blocks
    has_attention = [any(isinstance(m, SelfAttentionBlock) for m in block.modules()) for block in encoder]
    assert has_attention == [stage in stages for stage in range(1, 6)]
    mirrored = [any(isinstance(m, SelfAttentionBlock) for m in block.modules()) for block in decoder]
    assert mirrored == [stage in stages for stage in range(1, 6)]  # decoder block i mirrors encoder block i
    crl = model_of("CNN_Attention", "CRL", {"attention_stages": stages})
    assert sum(isinstance(m, SelfAttentionBlock) for m in crl.modules()) == len(stages)


# ----------------------------------------------------------------------------- Transformer
@pytest.mark.parametrize("params, tokens", [(LIGHT, 21), ({**LIGHT, "step_s": 0.5}, 51),
                                            ({"use_signal_backbone": False, "patch_size": 100}, 30),
                                            (ONE_TOKEN, 1)])
def test_transformer_token_count(params, tokens):
    model = model_of("Transformer", "MP", params)
    shapes = encoder_input_shapes(model)
    model.encode(epochs(2))
    assert model.backbone.num_tokens == tokens
    assert shapes == [(2, 1 + tokens, 128)]  # CLS + every token


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_token_masking_encoder_sees_only_kept_tokens(ratio):
    model = model_of("Transformer", "MP", {"patch_size": 300})  # 10 tokens of 3 s
    shapes, x = encoder_input_shapes(model), epochs(2)
    out = model.forward_mp(x, ratio, "token", 50)
    n_keep = 10 - round(ratio * 10)
    assert shapes == [(2, 1 + n_keep, 128)]
    assert out["mask"].shape == (2, 10) and torch.all(out["mask"].sum(1) == 10 - n_keep)
    assert out["pred"].shape == out["target"].shape == (2, 10, 300)
    assert torch.equal(out["target"][:, 3], x[:, 0, 900:1200])  # token 3 covers 9-12 s
    assert out["recon"].shape == (2, 1, 3000) and out["latent"].shape == (2, 128)


@pytest.mark.parametrize("patch_size, ratio", [(100, 0.5), (300, 0.5), (250, 0.5), (100, 0.25), (500, 0.5)])
def test_token_masking_never_scores_a_visible_sample_and_masks_the_exact_ratio(patch_size, ratio):
    """Every sample the MP loss scores lies in a dropped token and in no kept one; the number of dropped
    tokens is ratio * L to within one token (half a token, by rounding)."""
    model = model_of("Transformer", "MP", {"patch_size": patch_size})
    vit, x = model.backbone, epochs(4)
    out = model.forward_mp(x, ratio, "token", 50, torch.Generator().manual_seed(0))
    L = vit.num_tokens
    assert torch.all((out["mask"].sum(1) - ratio * L).abs() <= 0.5)
    starts = torch.arange(L) * vit.step  # the samples token l covers: [starts[l], starts[l] + window)
    covers = (torch.arange(3000)[None] >= starts[:, None]) & (torch.arange(3000)[None] < starts[:, None] + vit.window)
    for row in range(4):
        kept, dropped = covers[out["mask"][row] == 0].any(0), covers[out["mask"][row] == 1].any(0)
        assert not (kept & dropped).any()  # no scored sample inside a kept token


def test_token_masking_on_overlapping_frames_is_refused():
    """5-s frames every 0.5 s: a dropped frame's samples are inside its kept neighbours (the leak)."""
    with pytest.raises(ValueError, match="do not overlap"):
        model_of("Transformer", "MP", FRAMES).forward_mp(epochs(2), 0.5, "token", 50)
    with pytest.raises(ConfigError, match="data.masking: 'token' masking needs tokens that do not overlap"):
        load_config(REPO / "configs" / "DLPROJ_pretrain_MP_Transformer_Sleep-EDF-2018.json",
                    ["backbone.params.use_signal_backbone=true"])
    assert model_of("Transformer", "MP", {**FRAMES, "step_s": 5.0}).forward_mp(epochs(2), 0.5, "token", 50)["mask"].shape == (2, 6)


def test_only_visible_frames_are_embedded_and_match_embedding_all_then_dropping():
    """MAE drops masked tokens after the embedding; embedding only the visible frames gives the same
    tokens (BatchNorm in eval mode, so statistics do not depend on which frames are in the batch)."""
    model = model_of("Transformer", "MP", {**FRAMES, "step_s": 5.0}).eval()  # 6 frames of 5 s
    vit, x = model.backbone, epochs(3)
    backbone_frames = []
    vit.signal_backbone.register_forward_hook(lambda module, args, out: backbone_frames.append(args[0].shape[1]))
    encoded, mask, _ = vit.forward_encoder(x, 0.5, torch.Generator().manual_seed(3))
    assert backbone_frames == [3]  # 6 - round(0.5 * 6) = 3 of the 6 frames embedded

    tokens = vit.patch_embed(vit.signal_backbone(vit.frames(x))) + vit.positions[:, 1:]
    ids_keep, reference_mask, _ = choose_tokens(3, 6, 0.5, "cpu", torch.Generator().manual_seed(3))
    kept = gather_tokens(tokens, ids_keep)
    cls = (vit.cls_token + vit.positions[:, :1]).expand(3, -1, -1)
    torch.testing.assert_close(encoded, vit.encoder(torch.cat([cls, kept], dim=1)))
    assert torch.equal(mask, reference_mask)


def test_chosen_tokens_keep_visible_tokens_and_restore_order():
    tokens = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)
    ids_keep, mask, ids_restore = choose_tokens(2, 10, 0.6, "cpu", torch.Generator().manual_seed(0))
    kept = gather_tokens(tokens, ids_keep)
    assert kept.shape == (2, 4, 3) and torch.all(mask.sum(1) == 6)
    for row in range(2):
        assert torch.equal(kept[row].sort(0).values, tokens[row][mask[row] == 0])
    padded = torch.cat([kept, torch.full((2, 6, 3), -1.0)], dim=1)
    restored = torch.gather(padded, 1, ids_restore.unsqueeze(-1).expand(-1, -1, 3))
    expected = torch.where(mask.bool().unsqueeze(-1), torch.tensor(-1.0), tokens)
    assert torch.equal(restored, expected)


@pytest.mark.parametrize("window, step", [(500, 125), (100, 100), (3000, 3000)])
def test_overlap_average_inverts_framing(window, step):
    x = torch.randn(2, 3, 3000)
    frames = x.unfold(-1, window, step).transpose(1, 2).flatten(2)  # (B, L, C * W)
    assert torch.allclose(overlap_average(frames, 3000, window, step), x, atol=1e-6)


def test_one_token_config_works_and_refuses_token_masking():
    model, x = model_of("Transformer", "Hybrid", ONE_TOKEN), epochs()
    assert model.encode(x).shape == (4, 128)
    out = model.forward_mp(x, 0.5, "random", 50)
    assert out["recon"].shape == (4, 1, 3000) and out["pred"].shape == (4, 3000, 1)
    with pytest.raises(ValueError, match="needs several tokens"):
        model.forward_mp(x, 0.5, "token", 50)
    with pytest.raises(ConfigError, match="data.masking"):
        load_config(REPO / "configs" / "DLPROJ_pretrain_MP_Transformer_Sleep-EDF-2018.json",
                    ["backbone.params.patch_size=3000"])


# The reference's AutoEncoderViT at its DLPROJ configs (input_size 3000, num_patches 1, use_cls false), counted
# by hand from models/transformer/transformer.py: 3,564,472 parameters (../shared/reference/README.md). Of
# these, its two sin-cos tables (pos_embed 2 x 128, decoder_pos_embed 1 x 128) are frozen and its cls_token
# (128) is never used with use_cls false; the rest is what trains.
REFERENCE_ONE_TOKEN_TRAINED = 3_564_472 - 2 * 128 - 128 - 128


def test_without_cls_token_the_one_token_transformer_trains_the_references_parameters():
    model = model_of("Transformer", "MP", {**ONE_TOKEN, "cls_token": False})
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == REFERENCE_ONE_TOKEN_TRAINED


def test_without_cls_token_the_latent_is_the_first_tokens_output_and_the_decoder_sees_only_tokens():
    """The reference's use_cls false, written out: latent = encoder(tokens)[:, 0]; reconstruction =
    pred(decoder blocks(embed(encoder(tokens)) + positions)), with no latent injected."""
    model = model_of("Transformer", "MP", {"patch_size": 300, "cls_token": False}).eval()  # 10 tokens of 3 s
    vit, x = model.backbone, epochs(3)
    shapes = encoder_input_shapes(model)
    tokens = vit.patch_embed(x.reshape(3, 10, 300)) + vit.positions[:, 1:]
    encoded = vit.encoder(tokens)
    torch.testing.assert_close(model.encode(x), encoded[:, 0])
    assert shapes[0] == (3, 10, 128)  # no CLS token in front
    decoder = vit.decoder
    pred = decoder.pred(decoder.blocks(decoder.embed(encoded) + decoder.positions[:, 1:]))
    recon, latent = vit.reconstruct(x)
    torch.testing.assert_close(recon, pred.reshape(3, 1, 3000))
    torch.testing.assert_close(latent, encoded[:, 0])


def test_without_cls_token_token_masking_and_a_latent_projection_are_refused():
    path = REPO / "configs" / "DLPROJ_pretrain_MP_Transformer_Sleep-EDF-2018.json"  # token masking
    with pytest.raises(ConfigError, match=r"data.masking: 'token' masking needs the CLS token \(backbone.params.cls_token"):
        load_config(path, ["backbone.params.cls_token=false"])
    with pytest.raises(ConfigError, match="backbone.params.cls_token: false decodes"):
        load_config(path, ["backbone.params.cls_token=false", "backbone.params.latent_projection=true",
                           "backbone.params.latent_dim=128", "data.masking=random"])
    load_config(path, ["backbone.params.cls_token=false", "data.masking=random"])


# ----------------------------------------------------------------------------- masks
def test_random_mask_masks_exact_fraction_per_epoch():
    mask = random_sample_mask(8, 3000, 0.3, "cpu", torch.Generator().manual_seed(0))
    assert torch.all(mask.sum(1) == 900)
    assert not torch.equal(mask[0], mask[1])


@pytest.mark.parametrize("ratio, span", [(0.5, 50), (0.25, 30), (0.4, 7)])
def test_span_mask_covers_fraction_with_contiguous_spans(ratio, span):
    mask = span_mask(16, 3000, ratio, span, "cpu", torch.Generator().manual_seed(0))
    blocks = -(-3000 // span)
    fraction = mask.mean(1)
    assert torch.all((fraction - ratio).abs() <= span / 3000 + 0.5 / blocks)
    # every masked run (circularly) is a whole number of spans: the run starts, one per run,
    # number masked samples / span or fewer (adjacent spans merge)
    starts = ((mask == 1) & (mask.roll(1, dims=1) == 0)).sum(1)
    assert torch.all(starts <= round(ratio * blocks)) and torch.all(starts >= 1)
    if 3000 % span == 0:
        assert torch.all(mask.sum(1) == round(ratio * blocks) * span)


def test_masked_input_is_zero_exactly_where_masked_and_reproducible():
    x = epochs(3) + 5.0
    masked, mask = mask_input(x, 0.5, "span", 50, torch.Generator().manual_seed(3))
    assert torch.equal(masked[:, 0] == 0, mask.bool())
    _, again = mask_input(x, 0.5, "span", 50, torch.Generator().manual_seed(3))
    assert torch.equal(mask, again)
    with pytest.raises(ValueError, match="random"):
        mask_input(x, 0.5, "token", 50)


# ----------------------------------------------------------------------------- configuration errors
@pytest.mark.parametrize("backbone, key", [
    ({"type": "RNN"}, "backbone.type: 'RNN' is not one of ['CNN', 'CNN_Attention', 'Transformer']"),
    ({"type": "CNN", "params": {"kernel_size": 0}}, "backbone.params.kernel_size"),
    ({"type": "CNN", "params": {"depth": 3}}, "backbone.params.depth: unknown key"),
    ({"type": "CNN", "params": {"widths": [8, 16]}}, "backbone.params.widths"),
    ({"type": "CNN_Attention", "params": {"attention_stages": [6]}}, "backbone.params.attention_stages"),
    ({"type": "CNN_Attention", "params": {"attention_heads": 3}}, "backbone.params.attention_heads"),
    ({"type": "Transformer", "params": {"use_signal_backbone": True, "step_s": 2.0}}, "backbone.params.step_s"),
    ({"type": "CNN", "params": {"latent_dim": 64}}, "backbone.params.latent_dim"),
    ({"type": "CNN", "params": {"layers_per_block": [2, 2]}}, "backbone.params.layers_per_block"),
    ({"type": "Transformer", "params": {"use_signal_backbone": False, "patch_size": 7}}, "backbone.params.patch_size"),
])
def test_bad_backbone_raises_config_error_naming_the_key(backbone, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace(".", r"\.")):
        build_model({"backbone": backbone, "ssl": {"type": "MP"}})


def test_bad_ssl_type_lists_allowed_values():
    with pytest.raises(ConfigError, match=r"ssl\.type: 'SimCLR' is not one of \['CRL', 'MP', 'Hybrid', 'Supervised'\]"):
        build_model({"backbone": {"type": "CNN"}, "ssl": {"type": "SimCLR"}})


def test_load_config_validates_and_fills_backbone_params(tmp_path):
    path = tmp_path / "config.yaml"
    config = {"exp_name": "t", "backbone": {"type": "Transformer", "params": {"depth": 2}}, "ssl": {"type": "MP"}}
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert loaded["backbone"]["params"]["depth"] == 2 and loaded["backbone"]["params"]["window_s"] == 5.0
    assert len(build_model(loaded).backbone.encoder.layers) == 2
    with pytest.raises(ConfigError, match=r"backbone\.params\.num_heads"):
        load_config(path, ["backbone.params.num_heads=3"])


def test_transformer_refuses_an_epoch_of_another_length():
    with pytest.raises(ValueError, match="input_length=3000"):
        model_of("Transformer", "MP", LIGHT).encode(epochs(2, 2500))


def test_fixed_proportion_random_keeps_the_references_int_of_the_kept_share():
    """The reference keeps int(T (1 - ratio)) samples: T = 10, ratio 0.33 keeps int(6.7) = 6, masks 4
    (round(3.3) = 3 under 'random'); at T = 3000, ratio 0.25 both mask 750."""
    x = torch.ones(3, 1, 10)
    assert torch.all(mask_input(x, 0.33, "fixed_proportion_random", 1)[1].sum(1) == 4)
    assert torch.all(mask_input(x, 0.33, "random", 1)[1].sum(1) == 3)
    assert torch.all(mask_input(epochs(2), 0.25, "fixed_proportion_random", 1)[1].sum(1) == 750)


@pytest.mark.parametrize("stride, padding, dilation", [(1, "same", 1), (2, 3, 1), (1, 2, 2)])
def test_channels_last_conv1d_equals_torch_conv1d(stride, padding, dilation):
    from models.conv import Conv1d
    torch.manual_seed(0)
    conv = Conv1d(6, 10, 5 if padding != "same" else 3, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(4, 6, 101)
    expected = F.conv1d(x, conv.weight, conv.bias, stride, padding, dilation)
    got = conv.forward_channels_last(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the output is (B, L, C) in memory: what the next channels-last layer takes without a copy
    assert got.stride()[1] == 1


def test_channels_last_transposed_conv_equals_torch_transposed_conv():
    from models.conv import ConvTranspose1d
    torch.manual_seed(0)
    upsample = ConvTranspose1d(8, 8, kernel_size=5, stride=5)
    x = torch.randn(3, 8, 24)
    expected = F.conv_transpose1d(x, upsample.weight, upsample.bias, stride=5)
    torch.testing.assert_close(upsample.forward_channels_last(x), expected, rtol=1e-5, atol=1e-5)
    assert expected.shape == (3, 8, 120)


def test_shared_weight_prelu_computes_the_written_formula_and_its_gradient():
    """y = max(0, x) + a min(0, x); dL/da = sum of g * min(0, x) over every element; one parameter, as nn.PReLU."""
    from models.conv import PReLU
    activation = PReLU()
    with torch.no_grad():
        activation.weight.fill_(0.3)
    x = torch.tensor([[[-2.0, 1.0], [0.5, -1.0]], [[3.0, -0.5], [-4.0, 2.0]]], requires_grad=True)  # (B=2, C=2, L=2)
    upstream = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    y = activation(x)
    (y * upstream).sum().backward()
    expected = torch.tensor([[[-0.6, 1.0], [0.5, -0.3]], [[3.0, -0.15], [-1.2, 2.0]]])
    torch.testing.assert_close(y, expected)
    # negative elements: -2 (g 1), -1 (g 4), -0.5 (g 6), -4 (g 7): -2 - 4 - 3 - 28 = -37
    torch.testing.assert_close(activation.weight.grad, torch.tensor([-37.0]))
    torch.testing.assert_close(x.grad, torch.where(x > 0, upstream, 0.3 * upstream))
    assert [name for name, _ in activation.named_parameters()] == ["weight"] and activation.weight.numel() == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_cnn_reconstruction_equals_the_channels_first_cpu_model():
    config = load_config(REPO / "configs" / "DLPROJ_pretrain_MP_CNN_Sleep-EDF-2018.json", [])
    torch.manual_seed(0)
    backbone = build_model(config).backbone.eval()
    x = torch.randn(4, 1, 3000) * 3
    tf32 = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            expected_reconstruction, expected_latent = backbone.reconstruct(x)
            reconstruction, latent = backbone.cuda().reconstruct(x.cuda())
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    torch.testing.assert_close(latent.cpu(), expected_latent, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(reconstruction.cpu(), expected_reconstruction, rtol=1e-4, atol=1e-4)
