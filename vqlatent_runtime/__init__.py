"""The runtime of an exported latent translator (vqlatent-export): ONNX Runtime, numpy and
the tokenisation libraries, never torch or fairseq, so that a deployment installs little
and starts fast.

    vqlatent-translate OUT_DIR [--batch-size N] [--threads T] < raw.txt > out.txt

    from vqlatent_runtime import Translator
    Translator("OUT_DIR").translate(["A man is riding a bike."])
"""

from .translator import Translator, TranslatorError

__all__ = ["Translator", "TranslatorError"]
