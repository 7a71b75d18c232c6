"""Distillation (ODE init, Self-Forcing + DMD): the update's direction, train = inference rollouts,
exact resume, the student's step counts, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from infworld.distill.dmd import dmd_loss
from infworld.distill.self_forcing import distilled_steps, self_forcing_rollout, student_sampler
from infworld.errors import ConfigError
from infworld.train.checkpoint import LAST, load_checkpoint
from infworld.train.export import export_run
from infworld.train.recipe import load_recipe
from infworld.train.trainer import train


def gaussian_x0(x_t: torch.Tensor, t: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ N(mean, std^2), x_t = (1 - t) x0 + t eps (the exact denoiser)."""
    a = 1 - t
    return mean + a * std**2 / (a**2 * std**2 + t**2) * (x_t - a * mean)


def toy_dmd(sign: float, steps: int = 150) -> float:
    """A 1-D generator x = mu + 0.5 z trained by DMD toward N(2, 0.5^2); returns the final mu."""
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros((), requires_grad=True)
    opt = torch.optim.SGD([mu], lr=0.5)
    for _ in range(steps):
        x = mu + 0.5 * torch.randn(1, 256, generator=g)  # one "sample" of 256 values (one weight)
        t = 0.02 + 0.96 * torch.rand(1, 256, generator=g)
        x_t = (1 - t) * x.detach() + t * torch.randn(1, 256, generator=g)
        real = gaussian_x0(x_t, t, 2.0, 0.5)
        fake = gaussian_x0(x_t, t, float(mu.detach()), 0.5)  # the fake score: the generator's distribution
        loss, _ = dmd_loss(x, real, fake, sign)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(mu.detach())


def test_dmd_moves_a_toy_student_toward_the_teacher_and_away_with_the_sign_flipped():
    assert abs(toy_dmd(+1.0) - 2.0) < 0.1
    assert toy_dmd(-1.0) < -1.0  # pushed away from 2


def test_distilled_steps_are_the_divisors_of_the_grid():
    assert distilled_steps(4) == [1, 2, 4]
    assert distilled_steps(6) == [1, 2, 3, 6]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny trained world model (the teacher) and its dataset."""
    from test_trainer import make_dataset

    root = tmp_path_factory.mktemp("distill")
    data = make_dataset(root / "data")
    recipe = load_recipe("tiny-test-world", [f"data.root={data}", f"train.out={root / 'run'}",
                                             "train.steps=12"])
    run = train(recipe, progress=False)
    return export_run(run, root / "teacher"), data


def distill_recipe(teacher: Path, data: Path, out: Path, *extra: str):
    return load_recipe("tiny-test-distill", [f"data.root={data}", f"model.teacher={teacher}",
                                             f"train.out={out}", *extra])


def test_self_forcing_rollout_equals_inference_for_the_same_noise(teacher):
    from infworld.models.loading import load_model
    from infworld.world import RolloutConfig, WorldModel

    net, _ = load_model(teacher[0])
    frames = np.random.default_rng(0).integers(0, 255, (2, 2, 32, 32, 3), dtype=np.uint8)
    ctx_acts = {name: np.zeros((2, 1), int) for name in ("move", "view", "interact")}
    chunks = [{"move": np.full((2, 2), i), "view": np.full((2, 2), 1), "interact": np.zeros((2, 2), int)}
              for i in range(3)]

    def engine() -> WorldModel:
        return WorldModel(net, None, RolloutConfig(chunk=2, sampler=student_sampler(4), seed=7))

    ref = engine()
    ref.reset(frames, ctx_acts)
    want = []
    for acts in chunks:
        ref.step(acts)
        want.append(ref.last_latents)
    got = self_forcing_rollout(engine(), frames, ctx_acts, chunks, exit_steps=[3, 3, 3], grad=True)
    for a, b in zip(got, want, strict=True):
        assert a.requires_grad
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)
    # an earlier exit returns that step's clean estimate: different frames, same shapes
    early = self_forcing_rollout(engine(), frames, ctx_acts, chunks, exit_steps=[0, 1, 2], grad=False)
    assert early[0].shape == want[0].shape and not torch.equal(early[0], want[0])


def test_ode_stage_learns_and_the_student_runs_its_step_counts_only(teacher, tmp_path):
    from infworld.world import WorldModel

    run = train(distill_recipe(*teacher, tmp_path / "ode", "model.stage=ode", "train.steps=30",
                               "train.log_every=1"), progress=False)
    from infworld.train.logging import read_metrics

    losses = [r["value"] for r in read_metrics(run / "metrics.csv") if r["name"] == "train/loss_ode"]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    student = export_run(run, tmp_path / "student")
    for steps in (1, 2):
        world = WorldModel.from_pretrained(str(student), steps=steps)
        world.reset(np.zeros((1, 2, 32, 32, 3), np.uint8))
        out = world.step({"move": [[1, 2]], "view": [[0, 0]], "interact": [[0, 0]]})
        assert out.shape == (1, 2, 32, 32, 3)
    with pytest.raises(ConfigError, match=r"distilled for \[1, 2\] sampling steps cannot run 3"):
        WorldModel.from_pretrained(str(student), steps=3)
    # the ODE student seeds the DMD stage
    train(distill_recipe(*teacher, tmp_path / "dmd", f"model.student_init={student}", "train.steps=2"),
          progress=False)


def test_dmd_stage_with_a_retrieval_memory_over_real_history(teacher, tmp_path):
    """history frames leave the window and reach vrag's store; the student's rollout and the scores
    see what it retrieves (poses from the data)."""
    recipe = distill_recipe(*teacher, tmp_path / "m", "model.memory=vrag", "model.history=4",
                            "model.chunks=1", "data.clip_len=8", "train.steps=2", "train.log_every=1")
    run = train(recipe, progress=False)
    from infworld.train.logging import read_metrics

    names = {r["name"] for r in read_metrics(run / "metrics.csv")}
    assert {"train/loss_dmd", "train/loss_critic", "train/memory_frames"} <= names
    vals = [r["value"] for r in read_metrics(run / "metrics.csv") if r["name"] == "train/memory_frames"]
    assert max(vals) > 0


def test_dmd_stage_resumes_exactly(teacher, tmp_path):
    straight = train(distill_recipe(*teacher, tmp_path / "a", "train.steps=4"), progress=False)
    train(distill_recipe(*teacher, tmp_path / "b", "train.steps=4"), until_step=2, progress=False)
    resumed = train(distill_recipe(*teacher, tmp_path / "b", "train.steps=4"), resume=True, progress=False)
    a = load_checkpoint(straight / "checkpoints" / LAST)
    b = load_checkpoint(resumed / "checkpoints" / LAST)
    assert int(a["model"]["updates"]) == 4
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)


def test_the_generator_learns_only_on_its_steps(teacher, tmp_path):
    """generator_every=2: step 1 moves the student and the fake score, step 2 the fake score alone."""
    from infworld.train.tasks.distill import DistillTask

    recipe = distill_recipe(*teacher, tmp_path / "g", "model.generator_every=2")
    task = DistillTask(recipe.model, recipe)
    net = task.build_model()
    with torch.no_grad():  # the fake score as after some critic updates (were it still the teacher,
        for p in net.fake.dit.parameters():  # the DMD direction would be exactly zero)
            p.add_(0.05 * torch.randn_like(p))
    batch = next(task.batches("train", 2, 0, 0, 1))
    for expect_student in (True, False):
        net.zero_grad(set_to_none=True)
        loss, metrics = task.loss(net, batch, torch.Generator().manual_seed(0))
        loss.backward()
        assert metrics["generator_step"] == float(expect_student)
        has = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.student.dit.parameters()]
        assert any(has) == expect_student
        assert any(p.grad is not None for p in net.fake.dit.parameters())


def test_bad_input_names_the_field(teacher, tmp_path):
    from infworld.train.tasks.distill import DistillTask

    with pytest.raises(ConfigError, match="model.teacher"):
        recipe = distill_recipe(tmp_path / "missing", teacher[1], tmp_path / "x")
        DistillTask(recipe.model, recipe)
    with pytest.raises(ConfigError, match="model.teacher_steps"):
        recipe = distill_recipe(*teacher, tmp_path / "x", "model.teacher_steps=3")
        DistillTask(recipe.model, recipe)
    with pytest.raises(ConfigError, match="exceed the teacher's window"):
        recipe = distill_recipe(*teacher, tmp_path / "x", "model.chunks=5")
        DistillTask(recipe.model, recipe)
    # a student whose architecture differs from the teacher's
    other = train(load_recipe("tiny-test-world", [f"data.root={teacher[1]}", f"train.out={tmp_path / 'o'}",
                                                  "train.steps=1", "model.dit.dim=32"]), progress=False)
    mismatched = export_run(other, tmp_path / "other")
    recipe = distill_recipe(*teacher, tmp_path / "x", f"model.student_init={mismatched}")
    with pytest.raises(ConfigError, match=r"student_init .* differs from the teacher .* dit.dim \(32 vs 48\)"
                       ):
        DistillTask(recipe.model, recipe).build_model()


def test_the_shipped_student_plays_through_its_alias_at_its_step_counts_only():
    import infworld
    from infworld.serve.defaults import resolve_alias
    from infworld.world import WorldModel

    model, memory = resolve_alias("doom-tiny-fast")
    assert (model, memory) == ("doom-tiny-student", "vrag")
    world = WorldModel.from_pretrained(model, memory=memory)
    assert world.config.sampler.steps == 1 and world.config.sampler.cfg_scale == 1.0
    with pytest.raises(ConfigError, match=r"distilled for \[1, 2, 4\]"):
        WorldModel.from_pretrained(model, memory=memory, steps=8)
    env = infworld.make_env("doom-tiny-fast")
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (64, 64, 3)
    assert env.unwrapped.world.config.fold_commit  # play and gym fold the commit pass by default
    env.close()


def test_a_student_can_be_distilled_frame_by_frame(teacher, tmp_path, monkeypatch):
    """model.chunk=1: the student rolls out one-frame chunks, the way play steps it (a student
    distilled on 4-frame chunks dissolved when stepped one frame at a time)."""
    import infworld.train.tasks.distill as distill_task
    from infworld.train.tasks.distill import DistillTask

    sizes = []
    real = distill_task.self_forcing_rollout

    def spy(engine, frames, ctx_acts, chunks, *a, **k):
        sizes.append([int(c["move"].shape[1]) for c in chunks])
        return real(engine, frames, ctx_acts, chunks, *a, **k)

    monkeypatch.setattr(distill_task, "self_forcing_rollout", spy)
    recipe = distill_recipe(*teacher, tmp_path / "c1", "model.chunk=1", "model.chunks=3")
    task = DistillTask(recipe.model, recipe)
    net = task.build_model()
    loss, _ = task.loss(net, next(task.batches("train", 2, 0, 0, 1)), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and sizes == [[1] * 3]
    with pytest.raises(ConfigError, match="model.chunk"):
        recipe = distill_recipe(*teacher, tmp_path / "x", "model.chunk=-1")
        DistillTask(recipe.model, recipe)
