"""--init-from-teacher: what is copied from an autoregressive fairseq transformer, and the errors."""

import argparse

import pytest
import torch
from fairseq.models.transformer import TransformerModel, base_architecture

from conftest import TINY_MODEL, build_tiny_model, toy_task
from fairseq_vqlatent.errors import VQLatentError
from fairseq_vqlatent.teacher_init import initialize_from_teacher


def checkpoint(args, weights):
    """What fairseq-train saves, as far as fairseq's loader reads it."""
    history = [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
                "lr_scheduler_state": {"best": None}, "num_updates": 0}]
    return {"args": args, "model": weights, "optimizer_history": history, "extra_state": {}, "last_optimizer_state": None}


def save_teacher(path, task, dim=32, ffn=64, layers=1):
    args = argparse.Namespace(
        arch="transformer", encoder_embed_dim=dim, decoder_embed_dim=dim, encoder_ffn_embed_dim=ffn,
        decoder_ffn_embed_dim=ffn, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=2,
        decoder_attention_heads=2, share_all_embeddings=True, encoder_normalize_before=True,
        decoder_normalize_before=True, max_source_positions=1024, max_target_positions=1024,
    )
    base_architecture(args)
    torch.manual_seed(7)
    teacher = TransformerModel.build_model(args, task)
    torch.save(checkpoint(args, teacher.state_dict()), path)
    return teacher.state_dict()


def test_encoder_decoder_and_prior_layers_come_from_the_teacher(tmp_path):
    task = toy_task()
    teacher = save_teacher(tmp_path / "teacher.pt", task)
    model = build_tiny_model(task)
    fresh_compressor = model.compressor.blocks[0].layers[0].conv.weight.clone()
    report = initialize_from_teacher(model, str(tmp_path / "teacher.pt"))
    state = model.state_dict()
    for name in ("encoder.layers.0.fc1.weight", "encoder.embed_tokens.weight", "decoder.layers.0.encoder_attn.k_proj.weight",
                 "decoder.layer_norm.weight"):
        assert torch.equal(state[name], teacher[name]), name
    assert torch.equal(state["prior.layers.0.self_attn.q_proj.weight"], teacher["decoder.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(state["prior.layer_norm.bias"], teacher["decoder.layer_norm.bias"])
    # the shared embedding reaches the compressor and the output projection too
    assert torch.equal(model.compressor.embed_tokens.weight, teacher["encoder.embed_tokens.weight"])
    assert torch.equal(model.compressor.blocks[0].layers[0].conv.weight, fresh_compressor)
    summary = report.summary()
    # fresh: what has no counterpart (the code-space projection among it), never the EMA codebook's buffers
    assert "bottleneck.project_in" in summary and "bottleneck.codebook" not in summary
    assert "compressor.blocks" in summary and "prior.embed_tokens" in summary
    assert "teacher tensors not used: none" in summary  # every teacher tensor found a home


def test_a_shallower_student_takes_the_teachers_top_layers_and_reports_the_rest(tmp_path):
    task = toy_task()
    teacher = save_teacher(tmp_path / "t.pt", task, layers=2)
    model = build_tiny_model(task)  # 1 decoder layer, 1 prior layer
    report = initialize_from_teacher(model, str(tmp_path / "t.pt"))
    state = model.state_dict()
    for stack in ("decoder", "prior"):
        assert torch.equal(state[f"{stack}.layers.0.fc1.weight"], teacher["decoder.layers.1.fc1.weight"])
    assert not torch.equal(teacher["decoder.layers.0.fc1.weight"], teacher["decoder.layers.1.fc1.weight"])
    assert "decoder.layers" in report.summary().split("not used:")[1]


def test_a_shape_mismatch_names_the_parameter(tmp_path):
    task = toy_task()
    save_teacher(tmp_path / "t.pt", task, ffn=48)
    with pytest.raises(VQLatentError, match=r"parameter encoder\.layers\.0\.fc1\.weight has shape \(64, 32\) but the "
                                            r"teacher's encoder\.layers\.0\.fc1\.weight has \(48, 32\)"):
        initialize_from_teacher(build_tiny_model(task), str(tmp_path / "t.pt"))


def test_missing_truncated_and_latent_checkpoints_are_refused(tmp_path):
    task = toy_task()
    with pytest.raises(VQLatentError, match="does not exist"):
        initialize_from_teacher(build_tiny_model(task), str(tmp_path / "nope.pt"))
    save_teacher(tmp_path / "t.pt", task)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "t.pt").read_bytes()[:1000])
    with pytest.raises(VQLatentError, match="cut.pt is truncated or corrupt"):
        initialize_from_teacher(build_tiny_model(task), str(tmp_path / "cut.pt"))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(VQLatentError, match=r"--init-from-teacher: checkpoint .*empty.pt is empty \(0 bytes\)"):
        initialize_from_teacher(build_tiny_model(task), str(tmp_path / "empty.pt"))
    latent = build_tiny_model(task)
    torch.save(checkpoint(None, latent.state_dict()), tmp_path / "l.pt")
    with pytest.raises(VQLatentError, match="is a latent model, not an autoregressive teacher"):
        initialize_from_teacher(build_tiny_model(task), str(tmp_path / "l.pt"))
    assert TINY_MODEL["encoder_layers"] == 1  # the teachers above are built to the tiny model's size
