"""The latent predictor: an autoregressive Transformer decoder over codes.

Its vocabulary is a fairseq Dictionary of the K codes plus the usual specials;
EOS is the end-of-latents symbol, so the prior decides how many codes (hence how
long a translation) to emit. It is a regular incremental decoder: fairseq's
SequenceGenerator can search it, and modules/prior_search.py does so at inference.

Code ids live in three spaces, and this class is the one place that converts:

    bottleneck codes   0 .. K-1
    prior tokens       the codes shifted past fairseq's specials; EOS ends the latents
    code log-probs     K + 1 classes: the codes, then end-of-latents at index K (the loss)
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

    @property
    def num_codes(self) -> int:
        return len(self.dictionary) - self.dictionary.nspecial

    @property
    def end_token(self) -> int:
        """The prior token that ends the latents."""
        return self.dictionary.eos()

    def codes_to_tokens(self, codes: Tensor) -> Tensor:
        return codes + self.dictionary.nspecial

    def tokens_to_codes(self, tokens: Tensor) -> Tensor:
        return tokens - self.dictionary.nspecial

    def code_logits(self, logits: Tensor) -> Tensor:
        """[..., len(dictionary)] -> [..., K]: the codes' logits alone."""
        n = self.dictionary.nspecial
        return logits[..., n : n + self.num_codes]

    def code_log_probs(self, logits: Tensor) -> Tensor:
        """[..., len(dictionary)] -> [..., K + 1] log-probs: the K codes, then end-of-latents."""
        lprobs = torch.log_softmax(logits.float(), dim=-1)
        end = self.end_token
        return torch.cat([self.code_logits(lprobs), lprobs[..., end : end + 1]], -1)
