from .vqlatent_loss import VQLatentLoss, VQLatentLossConfig

__all__ = ["VQLatentLoss", "VQLatentLossConfig"]
