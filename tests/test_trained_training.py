"""Training is deterministic on the CPU, and the entry point writes loadable checkpoints (tiny runs only)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from toy_models import trained
from toy_models.metrics import ClassifierConfig
from toy_models.mlp import MLPConfig
from toy_models.train import CONFIGS, main, pick_device, quick_config, train
from toy_models.trained import load_checkpoint, load_mlp
from toy_models.unet import UNetConfig

TINY = {
    "unet": replace(
        UNetConfig(),
        channels=8,
        emb_dim=16,
        groups=4,
        steps=6,
        batch=16,
        eval_every=3,
        eval_repeats=1,
        snapshots=(6,),
        n_snapshot=10,
        snapshot_ddim_steps=3,
    ),
    "mlp": replace(
        MLPConfig(),
        hidden=16,
        depth=1,
        n_train=256,
        n_heldout=64,
        steps=6,
        batch=32,
        eval_every=3,
        snapshots=(6,),
        n_snapshot=20,
    ),
    "classifier": replace(ClassifierConfig(), channels=4, features=8, steps=6, batch=32, eval_every=3),
}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("kind", sorted(TINY))
def test_training_is_deterministic_on_the_cpu(kind: str) -> None:
    net_1, log_1, snap_1 = train(kind, TINY[kind], "cpu", threads=1)
    net_2, log_2, snap_2 = train(kind, TINY[kind], "cpu", threads=1)
    assert _same_weights(net_1, net_2)
    torch.testing.assert_close(log_1["loss"], log_2["loss"], rtol=0, atol=0)
    if snap_1:
        torch.testing.assert_close(snap_1["samples"], snap_2["samples"], rtol=0, atol=0)
    # ... and the seed matters (so the equality above is not vacuous).
    net_3, _, _ = train(kind, replace(TINY[kind], seed=1), "cpu", threads=1)
    assert not _same_weights(net_1, net_3)


def test_training_restores_global_torch_settings() -> None:
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    train("mlp", TINY["mlp"], "cpu", threads=1)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, det)


def test_entry_point_writes_a_loadable_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    main(["mlp", "--steps", "3", "--device", "cpu", "--out", str(tmp_path)])
    assert "mlp:" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "mlp.pt", "mlp")
    assert ckpt.config == replace(MLPConfig(), steps=3)
    assert ckpt.log["loss"].shape == (3,)
    assert load_mlp(tmp_path / "mlp.pt").config.steps == 3  # an explicit path loads whatever recipe it holds
    with pytest.raises(ValueError, match="differs from the expected one"):
        load_checkpoint(tmp_path / "mlp.pt", "mlp", expect=MLPConfig())
    # A committed checkpoint that no longer matches the code's recipe is refused, with the fix in the message.
    monkeypatch.setattr(trained, "CHECKPOINT_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"'steps': \(3, 6000\).*retrain with `python -m toy_models.train mlp`"):
        load_mlp()


def test_size_knob_device_and_bad_input() -> None:
    quick = quick_config(CONFIGS["unet"])
    assert quick.steps == CONFIGS["unet"].steps // 10
    assert max(quick.snapshots) <= quick.steps
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown kind"):
        train("transformer")
    with pytest.raises(TypeError, match="needs a UNetConfig"):
        train("unet", MLPConfig())
