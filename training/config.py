"""The config schema of DeepSleepBench and `load_config`, the one way every script reads a config.

    exp_name                    run name; logs/<exp_name>/, checkpoints/<exp_name>/, results/<exp_name>/
    backbone {type, params}     encoder family and its architecture (schema per type in models/)
    trainer {...}               optimisation and loop settings
    data {...}                  dataset location, channel, folds, masking for MP
    ssl {type, params}          paradigm (CRL, MP, Hybrid, Supervised) and its loss settings
    probe {...}                 the classifier trained on frozen latents
"""
from __future__ import annotations

from dset.loader import resolve_folds
from models.main_model import HEAD_PARAMS, SSL_TYPES, backbone_params, backbone_problems, build_backbone
from models.masking import INPUT_MASKINGS
from utils import ConfigError, Field, apply_overrides, fill_defaults, read_config_file, validate

# the augmentations in the reference's order (loader.py: Compose of transform.py)
AUGMENTATIONS = ("band_stop", "time_shift", "time_warp", "permutation", "zero_masking", "cutout_resize")
REFERENCE_BUG = "reproduces a reference bug"  # marks switches whose non-default value exists only to reproduce the seed


def _augmentation_order_problem(names: list) -> str | None:
    unknown = [name for name in names if name not in AUGMENTATIONS]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if unknown:
        return f"{unknown} not among the augmentations {list(AUGMENTATIONS)}"
    return f"{repeated} named more than once" if repeated else None


RESAMPLING = ("linear", "fft")
RESAMPLING_DOC = ("linear: linear interpolation (no ringing at the segment seams); "
                  "fft: the reference's scipy.signal.resample, exactly")
AUGMENTATION_SCHEMA = {  # defaults: the reference's transform.py, applied in its order (loader.py)
    "order": Field(list, list(AUGMENTATIONS), check=_augmentation_order_problem,
                   doc="augmentations applied, in this order; one not named is not applied"),
    "band_stop": {"p": Field(float, 0.5, min=0, max=1), "min_freq": Field(float, 0.5, min=0),
                  "max_freq": Field(float, 30.0, min=0), "bandwidth": Field(float, 2.0, min=0.1)},
    "time_shift": {"p": Field(float, 0.5, min=0, max=1), "max_shift_s": Field(float, 3.0, min=0),
                   "fill": Field(str, "zeros", choices=("zeros", "circular"))},
    "zero_masking": {"p": Field(float, 0.5, min=0, max=1), "max_length_s": Field(float, 3.0, min=0)},
    "time_warp": {"p": Field(float, 0.5, min=0, max=1), "n_segments": Field(int, 4, min=2),
                  "min_scale": Field(float, 0.5, min=0.05), "max_scale": Field(float, 2.0, min=0.05),
                  "resample": Field(str, "linear", choices=RESAMPLING, doc=RESAMPLING_DOC)},
    "permutation": {"p": Field(float, 0.5, min=0, max=1), "n_segments": Field(int, 4, min=2)},
    "cutout_resize": {"p": Field(float, 0.5, min=0, max=1), "n_segments": Field(int, 4, min=2),
                      "resample": Field(str, "linear", choices=RESAMPLING, doc=RESAMPLING_DOC)},
}

SCHEMA = {
    "exp_name": Field(str, doc="run name used for logs/, checkpoints/ and results/"),
    "backbone": backbone_problems,
    "trainer": {
        "batch_size": Field(int, 128, min=2),
        "learning_rate": Field(float, 1e-3, min=0, max=1),
        "weight_decay": Field(float, 1e-4, min=0),
        "optimizer": Field(str, "adam", choices=("adam", "adamw"), doc="adam: L2 weight decay (the reference); adamw: decoupled"),
        "max_epochs": Field(int, 500, min=1),
        "max_steps_per_epoch": Field(int, None, min=1, nullable=True, doc="cap on mini-batches per epoch"),
        "early_stopping_patience": Field(int, 10, min=1, doc="validations without improvement"),
        "val_period": Field(int, 0, min=0, doc="validate every N mini-batches; 0 = once per epoch"),
        "val_counter": Field(str, "epoch", choices=("epoch", "global"),
                             doc="what val_period counts: 'epoch' restarts at each epoch and also validates at its end; "
                                 f"'global' {REFERENCE_BUG} (mini-batches counted across epochs, every val_period-th "
                                 "validated and no epoch end; its 1,298 is one epoch of fold 1 only)"),
        "val_batch_size": Field(int, 1024, min=1),
        "val_chunk_size": Field(int, 1024, min=1, doc="samples the backbone encodes (and decodes) at once in validation; "
                                                      "eval mode, so the loss does not depend on it: larger is faster, "
                                                      "smaller holds less GPU memory"),
        "grad_clip": Field(float, None, min=0, nullable=True, doc="max gradient norm; null = no clipping (the reference)"),
        "amp": Field(bool, True, doc="bf16 autocast on CUDA (ignored on CPU)"),
        "compile": Field(bool, True, doc="torch.compile the paradigm's loss (encoder, heads, loss) on CUDA; "
                                            "ignored on CPU. Costs 30-150 s once per run, then ~2x faster steps"),
        "cuda_graphs": Field(bool, True, doc="replay each training step as one CUDA graph (single GPU)"),
        "seed": Field(int, 42),
    },
    "data": {
        "dataset": Field(str, "Sleep-EDF-2018", choices=("Sleep-EDF-2018", "Sleep-EDF-2013", "demo"),
                         doc="Sleep-EDF-2013 = subjects 0-19 of the same prepared nights (data.root_dir unchanged)"),
        "root_dir": Field(str, "dset/Sleep-EDF-2018/npz/Fpz-Cz", doc="folder of prepared NPZ nights"),
        "splits": Field(str, None, nullable=True, doc="subject-wise folds (JSON); null = dset/<dataset>/splits.json"),
        "channel": Field(str, "EEG Fpz-Cz"),
        "sampling_rate": Field(int, 100, choices=(100,)),
        "epoch_duration": Field(int, 30, choices=(30,)),
        "standardise": Field(bool, True, doc="standardise inputs with the training split's mean and std (stored in "
                                             "the checkpoint); false feeds raw µV, as the reference does"),
        "num_folds": Field(int, None, min=1, nullable=True, doc="null = the splits file's number of folds"),
        "masking": Field(str, "span", choices=(*INPUT_MASKINGS, "token")),
        "masking_ratio": Field(float, 0.5, min=0, max=0.95),
        "mask_span": Field(int, 50, min=1, doc="samples per span for masking='span'"),
    },
    "ssl": {
        "type": Field(str, choices=SSL_TYPES),
        "params": {
            "temperature": Field(float, 0.1, min=1e-3, max=10),
            "alpha_crl": Field(float, 10.0, min=0),
            **HEAD_PARAMS,
            "mp_loss": Field(str, "l2", choices=("l2", "cosine")),
            "mp_loss_on": Field(str, "masked", choices=("masked", "visible"),
                                doc=f"units the MP loss scores; 'visible' {REFERENCE_BUG} (it averaged over the unmasked samples)"),
            "validation_views": Field(str, "augmented", choices=("augmented", "identical"),
                                      doc="CRL/Hybrid validation views: two augmented views with fixed randomness; "
                                          f"'identical' {REFERENCE_BUG} (each unaugmented epoch against itself)"),
            "hybrid_batch": Field(str, "separate", choices=("separate", "joint"),
                                  doc="Hybrid's forward passes: 'separate' decodes only the B masked epochs and encodes "
                                      f"the 2B views apart; 'joint' {REFERENCE_BUG} (masked epochs and views through "
                                      "encoder and decoder as one batch of 3B: BatchNorm normalises them together, "
                                      "and the views' reconstructions are computed and discarded)"),
            "gather_negatives": Field(bool, True, doc="NT-Xent negatives from all DDP ranks"),
            "augmentations": AUGMENTATION_SCHEMA,
        },
    },
    "probe": {
        "type": Field(str, "both", choices=("linear", "mlp", "both", "context"),
                      doc="'both': linear and MLP, each in its own results folder; context: a temporal model over "
                          "probe.context.length latents of one night"),
        "epochs": Field(int, 100, min=1, doc="most probe epochs (one validation each)"),
        "batch_size": Field(int, 128, min=2, doc="MLP mini-batch (the reference's 128); the linear probe is full-batch L-BFGS"),
        "learning_rate": Field(float, 1e-3, min=0, max=1, doc="MLP (Adam)"),
        "weight_decay": Field(float, 1e-4, min=0, doc="L2 on the probe's parameters"),
        "patience": Field(int, 10, min=1, doc="epochs without a lower validation loss before stopping"),
        "class_weighting": Field(str, "none", choices=("none", "balanced"), doc="cross-entropy class weights"),
        "standardise": Field(bool, True, doc="probe input = (z - mean) / std of the training latents; "
                                                 "false: raw latents, as the reference"),
        "label_fraction": Field(float, 1.0, min=0.0001, max=1),
        "run_after_pretraining": Field(bool, True),
        "context": {  # probe.type "context" only (probing/context.py)
            "length": Field(int, 10, min=1, doc="latents per window, centred on the epoch (SleePyCo: 10)"),
            "model": Field(str, "transformer", choices=("transformer", "gru")),
            "hidden_dim": Field(int, 128, min=2),
            "layers": Field(int, 2, min=1),
            "heads": Field(int, 4, min=1, doc="attention heads (transformer); must divide hidden_dim"),
            "dropout": Field(float, 0.1, min=0, max=0.9),
            "batch_size": Field(int, 1024, min=1, doc="windows per step"),
        },
    },
}


def load_config(path, overrides: list[str] | None = None) -> dict:
    """Read, override (`--set k=v`), validate and default-fill a config. Raises ConfigError."""
    raw = apply_overrides(read_config_file(path), overrides)
    problems = validate(raw, SCHEMA)
    if raw.get("data", {}).get("masking") == "token" and raw.get("backbone", {}).get("type") != "Transformer":
        problems.append("data.masking: 'token' masking needs backbone.type 'Transformer' (use 'random' or 'span')")
    if problems:
        raise ConfigError(problems, path)
    config = fill_defaults(raw, SCHEMA)
    kind = config["backbone"]["type"]
    config["backbone"]["params"] = backbone_params(kind, config["backbone"].get("params", {}))
    data = config["data"]
    if data["masking"] == "token" and config["ssl"]["type"] == "Hybrid" and config["ssl"]["params"]["hybrid_batch"] == "joint":
        raise ConfigError(["ssl.params.hybrid_batch: 'joint' needs masking of input samples ('random', 'span' or "
                           "'fixed_proportion_random'); 'token' masking drops tokens, so the views cannot share "
                           "its batch"], path)
    if data["masking"] == "token" and config["ssl"]["type"] in ("MP", "Hybrid"):
        backbone = build_backbone(kind, config["backbone"]["params"], build_decoder=False)
        if problem := backbone.token_masking_problem(data["masking_ratio"]):
            raise ConfigError([f"data.masking: {problem}"], path)
    try:
        config["data"] = resolve_folds(config["data"])
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError([str(exc)], path) from None
    config["_source"] = str(path)
    return config
