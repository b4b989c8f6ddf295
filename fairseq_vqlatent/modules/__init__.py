from .bottlenecks import BOTTLENECK_REGISTRY, Bottleneck, BottleneckOutput, build_bottleneck
from .compressor import Compressor, latent_length
from .decompressor import Decompressor
from .latent_prior import LatentPrior, code_dictionary
from .one_shot_decoder import OneShotDecoder

__all__ = [
    "BOTTLENECK_REGISTRY",
    "Bottleneck",
    "BottleneckOutput",
    "Compressor",
    "Decompressor",
    "LatentPrior",
    "OneShotDecoder",
    "build_bottleneck",
    "code_dictionary",
    "latent_length",
]
