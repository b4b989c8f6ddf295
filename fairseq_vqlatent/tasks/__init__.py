from .translation_vqlatent import TranslationVQLatentConfig, TranslationVQLatentTask

__all__ = ["TranslationVQLatentConfig", "TranslationVQLatentTask"]
