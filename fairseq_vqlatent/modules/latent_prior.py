"""The latent predictor: an autoregressive Transformer decoder over codes.

Its vocabulary is a fairseq Dictionary of the K codes plus the usual specials;
EOS is the end-of-latents symbol, so the prior decides how many codes (hence how
long a translation) to emit. Being a regular incremental decoder, it decodes
with fairseq's SequenceGenerator and keeps incremental state.
"""

import torch
from fairseq.data import Dictionary
from fairseq.models.transformer import TransformerDecoderBase
from torch import Tensor


def code_dictionary(num_codes: int) -> Dictionary:
    d = Dictionary()
    for k in range(num_codes):
        d.add_symbol(f"c{k}")
    return d


class LatentPrior(TransformerDecoderBase):
    def __init__(self, cfg, dictionary: Dictionary, embed_tokens):
        super().__init__(cfg, dictionary, embed_tokens)
        # bos, pad and unk are never a latent: the prior never predicts them.
        banned = torch.zeros(len(dictionary), dtype=torch.bool)
        banned[[dictionary.bos(), dictionary.pad(), dictionary.unk()]] = True
        self.register_buffer("banned", banned, persistent=False)

    def output_layer(self, features: Tensor) -> Tensor:
        logits = super().output_layer(features)
        return logits.masked_fill(self.banned, float("-inf"))
