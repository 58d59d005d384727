from models.transformer.autoencoder_vit import AutoEncoderViT
from models.transformer.signal_backbone import SignalBackbone

__all__ = ["AutoEncoderViT", "SignalBackbone"]
