"""Lexical shortlists (--latent-shortlist): the Dice candidates against a hand count,
the types a batch may emit, decoding over them, and the file's checks."""

import sys

import pytest
import torch

from conftest import build_tiny_model, toy_batch, toy_task
from fairseq_vqlatent import VQLatentError
from fairseq_vqlatent.latent_generator import LatentGenerator
from fairseq_vqlatent.shortlist import Shortlist, dice_shortlist

EOS = 2  # fairseq's dictionaries: bos 0, pad 1, eos 2, unk 3, then the words


def hand_shortlist(top_k=2, frequent=1):
    pairs = [([5, 6, EOS], [10, 11, EOS]), ([5, 7, EOS], [10, 12, EOS]), ([6, EOS], [11, EOS])]
    return dice_shortlist([(torch.tensor(s), torch.tensor(t)) for s, t in pairs], 8, 13, top_k, frequent, nspecial=4)


def test_candidates_are_the_target_types_of_highest_dice_coefficient():
    # Dice 2 c(s,t) / (c(s) + c(t)); c counts sentences: s5 2, s6 2, s7 1; t10 2, t11 2, t12 1
    #   s5: t10 1, t12 2/3, t11 1/2    s6: t11 1, t10 1/2    s7: t12 1, t10 2/3
    shortlist = hand_shortlist()
    assert shortlist.candidates[5].tolist() == [10, 12]
    assert shortlist.candidates[6].tolist() == [11, 10]
    assert shortlist.candidates[7].tolist() == [12, 10]
    assert (shortlist.candidates[:5] == -1).all()  # specials and unseen types list nothing
    assert shortlist.frequent.tolist() == [10]  # in 2 sentences, as t11; the tie goes to the lower id


def test_a_batch_may_emit_its_sources_candidates_the_frequent_types_and_what_is_kept():
    shortlist = hand_shortlist(top_k=1)
    src = torch.tensor([[6, 7, EOS]])
    assert shortlist.for_sources(src, keep=[3], drop=[0, 1, EOS]).tolist() == [3, 10, 11, 12]
    assert shortlist.for_sources(torch.tensor([[EOS]]), keep=[3]).tolist() == [3, 10]


def ctc_generator(shortlist=None):
    task = toy_task()
    model = build_tiny_model(task, ctc_upsample=2, compress_steps=2, decoder_self_attention="full").eval()
    return model, task, LatentGenerator([model], task.target_dictionary, max_len_a=0, max_len_b=40, shortlist=shortlist)


def test_a_shortlist_of_every_type_changes_no_output_and_a_short_one_bounds_it():
    torch.manual_seed(0)
    model, task, plain = ctc_generator()
    d = task.target_dictionary
    everything = Shortlist(torch.full((len(d), 1), -1), torch.arange(len(d)), len(d))
    batch = toy_batch(task, [6, 20, 9], src_len=7)
    codes = torch.tensor([[3, 0], [5, 6], [4, 0]])
    mask = torch.tensor([[False, True], [False, False], [False, True]])
    with torch.no_grad():
        enc = model.encoder(batch["src_tokens"], src_lengths=batch["src_lengths"])
        full = plain.decode_by_length(model, codes, mask, enc, batch["src_tokens"])
        for shortlist in (everything, Shortlist(torch.full((len(d), 1), -1), torch.tensor([7, 8]), len(d))):
            short = LatentGenerator([model], d, max_len_a=0, max_len_b=40, shortlist=shortlist)
            hyps = short.decode_by_length(model, codes, mask, enc, batch["src_tokens"])
            for a, b in zip(full, hyps):
                if shortlist is everything:
                    assert a["tokens"].tolist() == b["tokens"].tolist()
                else:
                    assert set(b["tokens"].tolist()) <= {7, 8, d.eos()}


def test_a_shortlist_needs_a_ctc_model():
    task = toy_task()
    model = build_tiny_model(task)
    with pytest.raises(VQLatentError, match="--latent-shortlist needs a CTC output decoder"):
        LatentGenerator([model], task.target_dictionary, shortlist=hand_shortlist())


def test_loading_checks_the_file_and_the_dictionaries(tmp_path):
    path = tmp_path / "shortlist.pt"
    hand_shortlist().save(str(path))
    assert Shortlist.load(str(path), 8, 13).candidates[5].tolist() == [10, 12]
    with pytest.raises(VQLatentError, match=r"built for dictionaries of 8 source and 13 target types, not 8 and 20"):
        Shortlist.load(str(path), 8, 20)
    with pytest.raises(VQLatentError, match=r"missing\.pt does not exist"):
        Shortlist.load(str(tmp_path / "missing.pt"), 8, 13)
    (tmp_path / "text.pt").write_text("not a shortlist")
    with pytest.raises(VQLatentError, match=r"text\.pt is not a shortlist"):
        Shortlist.load(str(tmp_path / "text.pt"), 8, 13)


def test_an_output_in_a_missing_directory_is_one_line(tmp_path):
    from conftest import run

    proc = run([sys.executable, "-m", "fairseq_vqlatent.shortlist", tmp_path, tmp_path / "no" / "such" / "dir.pt"], check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr
