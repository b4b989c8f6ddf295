"""What the bottlenecks whose codes are rows of a :class:`Codebook` share: vq and
soft_em (EMA codebook), gumbel and gmvq (codebook learned by gradient).

The codebook's upkeep (k-means initialisation, and re-seeding where the codebook
does it before a step) runs before the codes enter the step's graph, only in
training; inference embeds a code by looking its row up; the output carries the
codebook's dead and re-seeded counts for fairseq's logs.
"""

from torch import Tensor

from .base import Bottleneck, BottleneckOutput, scatter_positions
from .codebook import Codebook


class CodebookBottleneck(Bottleneck):
    def __init__(self, codebook: Codebook, **code_space):
        super().__init__(codebook.dim, **code_space)
        self.codebook = codebook
        self.num_codes = codebook.num_codes

    def prepare_codebook(self, z: Tensor) -> None:
        """z [N, D]: what the codes are fitted to (the non-padding latents)."""
        if self.training:
            self.codebook.before_step(z.detach(), contribute=self.learn_from_batch)

    def output(self, z_q: Tensor, codes: Tensor, code_targets: Tensor, loss: Tensor, padding_mask: Tensor):
        """Per-latent rows [N, ...] -> the padded BottleneckOutput [B, L, ...]."""
        return BottleneckOutput(
            z_q=scatter_positions(z_q, padding_mask),
            codes=scatter_positions(codes, padding_mask),
            code_targets=scatter_positions(code_targets.detach(), padding_mask),
            loss=loss,
            dead_codes=self.codebook.num_dead_codes(),
            reseeded_codes=self.codebook.last_reseeded if self.training else 0,
        )

    def code_vectors(self, codes: Tensor) -> Tensor:
        return self.codebook.lookup(codes)
