"""Training state: stop-and-keep, exact resumption, warm starts and autosave checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from comfy_splice.checkpoint import load_generator, read_metadata, save_generator
from comfy_splice.run import TrainConfig, TrainedGenerator
from comfy_splice.train import train_generator

from .conftest import synthetic_image

PROBE = synthetic_image(40, 56, seed=9)


STEPS = 6


def _config(**kw) -> TrainConfig:
    base = dict(steps=STEPS, log_every=4, preview_every=0, full_image_every=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def straight(tiny_backbone) -> TrainedGenerator:
    """The uninterrupted run every resumed run must reproduce bit for bit."""
    return train_generator(tiny_backbone, *_pair(), _config(), "cpu")


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_image(48, 64, seed=1), synthetic_image(56, 48, seed=2)


def _weights(trained: TrainedGenerator) -> dict[str, torch.Tensor]:
    return trained.generator.state_dict()


def _assert_same_run(a: TrainedGenerator, b: TrainedGenerator) -> None:
    for key, value in _weights(a).items():
        assert torch.equal(value, _weights(b)[key]), key
    assert a.history == b.history
    assert a.state is not None and b.state is not None and a.state.step == b.state.step
    assert a.state.optimizer.keys() == b.state.optimizer.keys()
    for key, value in a.state.optimizer.items():
        assert torch.equal(value, b.state.optimizer[key]), key
    assert torch.equal(a.state.augment_rng, b.state.augment_rng)


def test_steps_then_resumed_steps_equal_one_run(tiny_backbone, straight) -> None:
    first = train_generator(tiny_backbone, *_pair(), _config(steps=STEPS // 2), "cpu")
    assert first.state is not None and first.state.step == STEPS // 2
    resumed = train_generator(tiny_backbone, *_pair(), _config(), "cpu", init=first)
    _assert_same_run(resumed, straight)
    assert len(resumed.history["loss"]) == STEPS


def test_resume_through_a_saved_file_is_exact(tiny_backbone, straight, tmp_path: Path) -> None:
    first = train_generator(tiny_backbone, *_pair(), _config(steps=2), "cpu")
    loaded = load_generator(save_generator(tmp_path / "g.safetensors", first))
    assert loaded.state is not None and loaded.state.step == 2
    resumed = train_generator(tiny_backbone, *_pair(), _config(), "cpu", init=loaded)
    for key, value in _weights(resumed).items():
        assert torch.equal(value, _weights(straight)[key]), key
    assert resumed.history["loss"] == straight.history["loss"]


def test_another_pair_fine_tunes_from_the_weights(tiny_backbone, caplog) -> None:
    first = train_generator(tiny_backbone, *_pair(), _config(steps=2), "cpu")
    other = (synthetic_image(64, 48, seed=5), _pair()[1])
    with caplog.at_level("INFO", logger="comfy_splice.train"):
        tuned = train_generator(tiny_backbone, *other, _config(steps=2), "cpu", init=first)
    assert "fine-tuning" in caplog.text and "other images" in caplog.text
    assert tuned.state is not None and tuned.state.step == 2 and len(tuned.history["loss"]) == 2
    fresh = train_generator(tiny_backbone, *other, _config(steps=2), "cpu")
    with torch.no_grad():
        assert not torch.equal(tuned.generator(PROBE), fresh.generator(PROBE))
    # a changed setting on the same pair also fine-tunes instead of resuming
    with caplog.at_level("INFO", logger="comfy_splice.train"):
        changed = train_generator(tiny_backbone, *_pair(), _config(steps=2, lr=1e-3), "cpu", init=first)
    assert "lr" in caplog.text and changed.state.step == 2 and len(changed.history["loss"]) == 2


def test_a_finished_run_given_again_trains_nothing(tiny_backbone) -> None:
    done = train_generator(tiny_backbone, *_pair(), _config(steps=2), "cpu")
    steps: list[int] = []
    again = train_generator(tiny_backbone, *_pair(), _config(steps=2), "cpu", init=done,
                            on_step=lambda s, t: steps.append(s))
    assert steps == [] and again.state.step == 2
    for key, value in _weights(again).items():
        assert torch.equal(value, _weights(done)[key])


def test_finish_early_returns_the_steps_done_and_resumes(tiny_backbone, straight) -> None:
    done: list[int] = []
    kept = train_generator(tiny_backbone, *_pair(), _config(), "cpu",
                           on_step=lambda s, t: done.append(s), should_finish=lambda: len(done) >= 4)
    assert done == [1, 2, 3, 4]
    assert kept.state is not None and kept.state.step == 4 and kept.steps_done == 4
    assert len(kept.history["loss"]) == 4  # pending losses flushed on the early finish
    _assert_same_run(train_generator(tiny_backbone, *_pair(), _config(), "cpu", init=kept), straight)


def test_a_spent_time_budget_still_makes_one_step(tiny_backbone) -> None:
    kept = train_generator(tiny_backbone, *_pair(), _config(), "cpu", max_seconds=0.0)
    assert kept.state.step == 1 and len(kept.history["loss"]) == 1


def test_checkpoints_are_snapshots_that_resume_exactly(tiny_backbone, straight, tmp_path: Path) -> None:
    saved: list[tuple[int, Path]] = []

    def autosave(snapshot: TrainedGenerator) -> None:
        path = save_generator(tmp_path / "auto.safetensors", snapshot)
        saved.append((snapshot.state.step, path))

    run = train_generator(tiny_backbone, *_pair(), _config(), "cpu", checkpoint_every=2, on_checkpoint=autosave)
    _assert_same_run(run, straight)  # taking snapshots does not disturb the run
    assert [step for step, _ in saved] == [2, 4]
    # only the final file is left: no temporary file beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto.safetensors"]
    loaded = load_generator(tmp_path / "auto.safetensors")
    assert loaded.state.step == 4 and len(loaded.history["loss"]) == 4
    resumed = train_generator(tiny_backbone, *_pair(), _config(), "cpu", init=loaded)
    for key, value in _weights(resumed).items():
        assert torch.equal(value, _weights(straight)[key]), key


def test_a_failed_save_leaves_the_previous_file_intact(tiny_backbone, tmp_path: Path) -> None:
    trained = train_generator(tiny_backbone, *_pair(), _config(steps=1), "cpu")
    path = save_generator(tmp_path / "g.safetensors", trained)
    before = path.read_bytes()
    broken = TrainedGenerator(trained.generator, trained.config, trained.backbone_name,
                              trained.history, trained.state)
    broken.state.optimizer["0.step"] = "not a tensor"  # type: ignore[assignment]
    with pytest.raises(AttributeError):  # the broken entry fails mid-save
        save_generator(path, broken)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["g.safetensors"]


def test_damaged_train_state_is_refused(tiny_backbone, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    trained = train_generator(tiny_backbone, *_pair(), _config(steps=1), "cpu")
    path = save_generator(tmp_path / "g.safetensors", trained)
    meta, tensors = read_metadata(path), load_file(str(path))
    assert "train_state.optimizer.0.exp_avg" in tensors and '"step": 1' in meta["splice_train_state"]
    tensors["train_state.optimizer.0.exp_avg"] = torch.zeros(3)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="has shape"):
        load_generator(tmp_path / "bad.safetensors")
    meta["splice_train_state"] = "{not json"
    save_file(load_file(str(path)), str(tmp_path / "bad2.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="unreadable"):
        load_generator(tmp_path / "bad2.safetensors")
