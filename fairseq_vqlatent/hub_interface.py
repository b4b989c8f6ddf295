"""The Python API: fairseq's hub interface for latent models, with its input checked.

``VQLatentTransformerModel.from_pretrained`` returns this. fairseq's own interface
takes whatever it is given: bytes were iterated as numbers (``TypeError: Input must be
str or bytes`` from deep inside sentencepiece), and a plain ``transformer``
checkpoint loaded and translated autoregressively under the latent model's name.
"""

from typing import List, Union

from fairseq import hub_utils

from .errors import VQLatentError, loading_checkpoint
from .input_lines import as_text
from .models.vqlatent_transformer import is_vqlatent_model

Sentences = Union[str, bytes, List[Union[str, bytes]]]


class VQLatentHubInterface(hub_utils.GeneratorHubInterface):
    def sample(self, sentences: Sentences, beam: int = 1, verbose: bool = False, **kwargs):
        if isinstance(sentences, (str, bytes)):
            return self.sample([sentences], beam=beam, verbose=verbose, **kwargs)[0]
        texts = [as_text(s, f"sentence {i}") for i, s in enumerate(sentences, start=1)]
        return super().sample(texts, beam=beam, verbose=verbose, **kwargs)


def load_hub_interface(model_name_or_path, checkpoint_file, data_name_or_path, archive_map, **kwargs):
    with loading_checkpoint(f"{model_name_or_path}/{checkpoint_file}"):  # not torch's multi-line refusal
        loaded = hub_utils.from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path,
                                           archive_map=archive_map, **kwargs)
    for model in loaded["models"]:
        if not is_vqlatent_model(model):
            name = getattr(getattr(model, "cfg", None), "_name", None) or type(model).__name__
            raise VQLatentError(
                f"{checkpoint_file} in {model_name_or_path} holds a {name!r} model, not a vqlatent_transformer: "
                "load it with fairseq's TransformerModel.from_pretrained")
    return VQLatentHubInterface(loaded["args"], loaded["task"], loaded["models"])
