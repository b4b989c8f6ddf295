"""The Python API: fairseq's hub interface on a trained latent model (README, "Python")."""

import pytest

from fairseq_vqlatent import VQLatentError
from fairseq_vqlatent.models.vqlatent_transformer import VQLatentTransformerModel


@pytest.fixture(scope="module")
def translator(trained):
    hub = VQLatentTransformerModel.from_pretrained(
        str(trained.save),
        checkpoint_file="checkpoint_last.pt",
        data_name_or_path=str(trained.data / "bin"),
        bpe="sentencepiece",
        sentencepiece_model=str(trained.data / "spm.model"),
    )
    return hub.eval()


def test_raw_text_in_raw_text_out(translator):
    out = translator.translate("A dog runs through the park.")
    assert isinstance(out, str) and out.strip()
    assert "▁" not in out  # the sentencepiece pieces are decoded back to text


def test_a_batch_translates_each_sentence_as_alone(translator):
    sentences = ["A dog runs through the park.", "Two men are playing football on a green field.", "A woman."]
    batch = translator.translate(sentences, beam=1)
    assert len(batch) == 3 and all(isinstance(t, str) and t.strip() for t in batch)
    assert batch == [translator.translate(s) for s in sentences]


def test_an_empty_sentence_is_a_clear_error(translator):
    with pytest.raises(VQLatentError, match="empty source sentence"):
        translator.translate("")
