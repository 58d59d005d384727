"""Encoders (CNN, CNN_Attention, Transformer), masking, and the factory `build_model(config) -> SSLModel`."""
from models.main_model import BACKBONES, SSLModel, build_model

__all__ = ["BACKBONES", "SSLModel", "build_model"]
