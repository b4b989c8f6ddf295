from .vqlatent_transformer import VQLatentOutput, VQLatentTransformerConfig, VQLatentTransformerModel

__all__ = ["VQLatentOutput", "VQLatentTransformerConfig", "VQLatentTransformerModel"]
