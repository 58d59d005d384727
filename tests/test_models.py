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
from utils import ConfigError

TYPES = tuple(BACKBONES)
ONE_TOKEN = {"use_signal_backbone": False, "patch_size": 3000}
LIGHT = {"backbone_width": 4}  # a cheaper signal backbone where its width does not matter


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


def test_mp_alone_trains_the_latent_projection():
    """The latent feeds the decoder, so MP trains the same latent the probe reads."""
    for kind in TYPES:
        model = model_of(kind, "MP", LIGHT if kind == "Transformer" else {})
        model.forward_mp(epochs(2), 0.5, "random", 1)["pred"].pow(2).mean().backward()
        assert all(p.grad.abs().sum() > 0 for p in model.backbone.to_latent.parameters())


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
def test_cnn_pyramid_and_exact_reconstruction_of_any_length():
    model = model_of("CNN", "MP").eval()
    c3, c4, c5 = model.backbone.pyramid(epochs(2))
    assert (c3.shape, c4.shape, c5.shape) == ((2, 64, 120), (2, 128, 40), (2, 256, 20))
    recon, _ = model.backbone.reconstruct(epochs(2, 2999))  # pools floor 2999 -> 599 -> 119 -> 39 -> 19
    assert recon.shape == (2, 1, 2999)


def test_cnn_widths_and_pools_from_params():
    params = {"widths": [8, 8, 24, 24], "pool_sizes": [4, 3, 5], "kernel_size": 7, "latent_dim": 32}
    model = model_of("CNN", "MP", params)
    assert [s.shape[1:] for s in model.backbone.encoder(epochs(2))] == [(8, 3000), (8, 750), (24, 250), (24, 50)]
    assert model.encode(epochs(2)).shape == (2, 32)
    assert model.backbone.encoder.blocks[0][0].kernel_size == (7,)


@pytest.mark.parametrize("stages", [[4, 5], [1, 3]])
def test_attention_exactly_at_configured_stages(stages):
    model = model_of("CNN_Attention", "MP", {"attention_stages": stages})
    encoder, decoder = model.backbone.encoder.blocks, model.backbone.decoder.blocks
    has_attention = [any(isinstance(m, SelfAttentionBlock) for m in block.modules()) for block in encoder]
    assert has_attention == [stage in stages for stage in range(1, 6)]
    mirrored = [any(isinstance(m, SelfAttentionBlock) for m in block.modules()) for block in decoder]
    assert mirrored == [stage in stages for stage in range(5, 0, -1)]
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
    assert shapes == [(2, 1 + tokens, 256)]  # CLS + every token


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_token_masking_encoder_sees_only_kept_tokens(ratio):
    model = model_of("Transformer", "MP", LIGHT)
    shapes, x = encoder_input_shapes(model), epochs(2)
    out = model.forward_mp(x, ratio, "token", 50)
    n_keep = round((1 - ratio) * 21)
    assert shapes == [(2, 1 + n_keep, 256)]
    assert out["mask"].shape == (2, 21) and torch.all(out["mask"].sum(1) == 21 - n_keep)
    assert out["pred"].shape == out["target"].shape == (2, 21, 500)
    assert torch.equal(out["target"][:, 3], x[:, 0, 3 * 125 : 3 * 125 + 500])  # frame 3 starts at 3.75 s
    assert out["recon"].shape == (2, 1, 3000) and out["latent"].shape == (2, 128)


def test_only_visible_frames_are_embedded_and_match_embedding_all_then_dropping():
    """MAE drops masked tokens after the embedding; embedding only the visible frames gives the same
    tokens (BatchNorm in eval mode, so statistics do not depend on which frames are in the batch)."""
    model = model_of("Transformer", "MP", LIGHT).eval()
    vit, x = model.backbone, epochs(3)
    backbone_frames = []
    vit.signal_backbone.register_forward_hook(lambda module, args, out: backbone_frames.append(args[0].shape[1]))
    encoded, mask, _ = vit.forward_encoder(x, 0.5, torch.Generator().manual_seed(3))
    assert backbone_frames == [10]  # round((1 - 0.5) * 21) = 10 of the 21 frames embedded

    tokens = vit.patch_embed(vit.signal_backbone(vit.frames(x))) + vit.positions[:, 1:]
    ids_keep, reference_mask, _ = choose_tokens(3, 21, 0.5, "cpu", torch.Generator().manual_seed(3))
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
        model_of("Transformer", "MP", ONE_TOKEN, data={"masking": "token"})


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
    ({"type": "Transformer", "params": {"step_s": 2.0}}, "backbone.params.step_s"),
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
