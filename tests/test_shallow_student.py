"""scripts/shallow_student_init.py: a deep-encoder, shallow-decoder student cut from a fairseq transformer."""

import argparse
import importlib.util
import re

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.models.transformer import TransformerModel, base_architecture

from conftest import REPO, toy_task

spec = importlib.util.spec_from_file_location("shallow_student_init", REPO / "scripts" / "shallow_student_init.py")
shallow_student_init = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shallow_student_init)


def save_teacher(path, task, layout="cfg"):
    """A 2-layer fairseq `transformer`, saved as fairseq-train 0.12 does (cfg) or as older fairseq did (args)."""
    args = argparse.Namespace(
        arch="transformer", encoder_embed_dim=32, decoder_embed_dim=32, encoder_ffn_embed_dim=64,
        decoder_ffn_embed_dim=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, share_all_embeddings=True, encoder_normalize_before=True,
        decoder_normalize_before=True, max_source_positions=64, max_target_positions=64,
    )
    base_architecture(args)
    torch.manual_seed(7)
    weights = TransformerModel.build_model(args, task).state_dict()
    history = [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
                "lr_scheduler_state": {"best": 3.2}, "num_updates": 500}]
    # the teacher's training time would eat the student's --stop-time-hours
    extra = {"previous_training_time": 4000.0, "train_iterator": {"epoch": 9, "iterations_in_epoch": 0}}
    state = {"model": weights, "optimizer_history": history, "extra_state": extra, "last_optimizer_state": {}}
    state.update({"args": None, "cfg": {"model": args}} if layout == "cfg" else {"args": args})
    torch.save(state, path)
    return weights


@pytest.mark.parametrize("layout", ["cfg", "args"])
def test_the_top_decoder_layer_and_everything_else_are_kept(tmp_path, capsys, layout):
    task = toy_task()
    teacher = save_teacher(tmp_path / "teacher.pt", task, layout)
    assert not torch.equal(teacher["decoder.layers.0.fc1.weight"], teacher["decoder.layers.1.fc1.weight"])
    assert shallow_student_init.main([str(tmp_path / "teacher.pt"), str(tmp_path / "student.pt"),
                                      "--decoder-layers", "1"]) == 0
    assert "decoder layers 1..1 (of 2) as 0..0" in capsys.readouterr().out

    state = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "student.pt"))
    student = state["model"]
    for name, value in teacher.items():
        layer = re.match(r"decoder\.layers\.(\d+)\.(.*)", name)
        if layer is None:  # encoder, embeddings, decoder.layer_norm, output projection
            assert torch.equal(student[name], value), name
        elif layer.group(1) == "1":
            assert torch.equal(student[f"decoder.layers.0.{layer.group(2)}"], value), name
    assert not any(k.startswith("decoder.layers.1.") for k in student)
    assert state["cfg"]["model"].decoder_layers == 1
    if layout == "args":
        assert state["args"].decoder_layers == 1
    assert state["last_optimizer_state"] is None and "previous_training_time" not in state["extra_state"]
    # what fairseq-train --restore-file does with it: a model of the checkpoint's config takes the weights strictly
    model_cfg = state["cfg"]["model"]
    TransformerModel.build_model(model_cfg, task).load_state_dict(student, strict=True, model_cfg=model_cfg)


@pytest.mark.parametrize("layers, message", [("3", "the teacher has 2 decoder layers"), ("0", "at least 1")])
def test_more_layers_than_the_teacher_has_or_none_are_refused(tmp_path, capsys, layers, message):
    save_teacher(tmp_path / "teacher.pt", toy_task())
    assert shallow_student_init.main([str(tmp_path / "teacher.pt"), str(tmp_path / "s.pt"),
                                      "--decoder-layers", layers]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "s.pt").exists()


def test_missing_and_non_transformer_checkpoints_are_refused(tmp_path, capsys):
    out = str(tmp_path / "s.pt")
    assert shallow_student_init.main([str(tmp_path / "nope.pt"), out]) == 1
    assert capsys.readouterr().err.startswith("error: teacher checkpoint")
    history = [{"criterion_name": "VQLatentLoss", "optimizer_name": "Adam", "lr_scheduler_state": {}, "num_updates": 0}]
    latent = {"encoder.layers.0.fc1.weight": torch.zeros(1), "decoder.layers.0.fc1.weight": torch.zeros(1),
              "prior.layers.0.fc1.weight": torch.zeros(1)}
    torch.save({"model": latent, "optimizer_history": history, "extra_state": {}}, tmp_path / "latent.pt")
    assert shallow_student_init.main([str(tmp_path / "latent.pt"), out]) == 1
    assert "is not a fairseq encoder-decoder transformer checkpoint" in capsys.readouterr().err
