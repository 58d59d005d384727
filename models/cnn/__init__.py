from models.cnn.cnn import CNN

__all__ = ["CNN"]
