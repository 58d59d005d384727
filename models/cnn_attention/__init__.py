from models.cnn_attention.cnn_attention import CNNAttention

__all__ = ["CNNAttention"]
