"""Two real fairseq-train workers over gloo on CPU (../shared/SPEC.md section 4)
train the latent model together and end bit-identical (issue 10)."""

import os
import socket
import subprocess

from conftest import BIN, REPO, TINY_TRAIN_ARGS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_end_with_the_same_parameters_and_codebooks(slice_data, tmp_path):
    digests = tmp_path / "digests"
    port = free_port()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    # soft EM with k-means initialisation and re-seeding: the buffers most likely to drift
    args = [*TINY_TRAIN_ARGS, "--bottleneck", "soft_em", "--codebook-init", "kmeans", "--dead-code-threshold", "0.5",
            "--max-update", "24", "--validate-interval-updates", "12", "--max-valid-steps", "2",
            "--save-dir", tmp_path / "ckpt", "--no-epoch-checkpoints", "--state-digest-dir", digests,
            "--distributed-backend", "gloo", "--ddp-backend", "legacy_ddp", "--distributed-world-size", "2",
            "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn", "--device-id", "0"]
    workers = [
        subprocess.Popen([str(a) for a in ["fairseq-train", slice_data / "bin", *args, "--distributed-rank", rank]],
                         cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "training on 2 devices" in logs[0]

    rank0, rank1 = ((digests / f"rank-{r}.txt").read_text().splitlines() for r in (0, 1))
    assert len(rank0) >= 3  # a digest at each validation: updates 12 and 24, and the end of epoch 1
    assert rank0 == rank1
    assert rank0[0].split()[1] != rank0[-1].split()[1]  # and training changed the state in between


def test_the_digest_sees_every_parameter_and_buffer_bit():
    import torch

    from conftest import build_tiny_model
    from fairseq_vqlatent.state_digest import state_digest

    torch.manual_seed(0)
    a = build_tiny_model()
    torch.manual_seed(0)
    b = build_tiny_model()
    assert state_digest(a) == state_digest(b)
    b.bottleneck.codebook.embed[3, 1] = torch.nextafter(b.bottleneck.codebook.embed[3, 1], torch.tensor(9.0))
    assert state_digest(a) != state_digest(b)  # one ulp of one codebook buffer


def test_the_model_is_recognised_inside_fairseqs_nested_ddp_wrappers():
    # legacy_ddp wraps twice: ModuleProxyWrapper(LegacyDistributedDataParallel(model)). Unwrapping
    # one level only made the criterion refuse the model on every multi-worker run.
    import torch
    from fairseq.distributed import ModuleProxyWrapper

    from conftest import build_tiny_model
    from fairseq_vqlatent.models.vqlatent_transformer import is_vqlatent_model

    class DataParallel(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = build_tiny_model()
    assert is_vqlatent_model(model) and is_vqlatent_model(DataParallel(model))
    assert is_vqlatent_model(ModuleProxyWrapper(DataParallel(model)))
    assert not is_vqlatent_model(ModuleProxyWrapper(DataParallel(torch.nn.Linear(2, 2))))
