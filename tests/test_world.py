"""The world task (config resolution, loss, eval, export round trip) and the WorldModel engine API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import make_dataset

from infworld.errors import CheckpointError, ConfigError, DataError, DeviceError, MemoryConfigError
from infworld.memory.base import Memory, MemoryContext
from infworld.memory.registry import make_memory, memory_names, register_memory
from infworld.models.tokenizers import PixelTokenizer
from infworld.models.worldnet import WorldNet
from infworld.train.recipe import load_recipe
from infworld.train.tasks.world import WorldTask
from infworld.world import RolloutConfig, WorldModel


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("world_data"))


def task_for(root, *overrides: str) -> WorldTask:
    recipe = load_recipe("tiny-test-world", [f"data.root={root}", *overrides])
    return WorldTask(recipe.model, recipe)


def first_batch(task: WorldTask, split: str = "train", batch_size: int = 4):
    return next(task.batches(split, batch_size, seed=0, rank=0, world_size=1))


def test_config_resolution_and_batches(data_root):
    task = task_for(data_root)
    d = task.dit_config
    assert (d.in_channels, tuple(d.latent_size)) == (48, (8, 8))  # pixels:4 on 32x32x3
    assert d.actions.num_interact == 2 and d.max_frames == 6  # vocab size, clip_len
    assert task.config.dit.in_channels == 48  # resolved values are recorded in the recipe's config
    batch = first_batch(task)
    assert batch["frames"].shape == (4, 6, 3, 32, 32) and batch["move"].shape == (4, 5)


def test_bad_configs_are_rejected(data_root):
    with pytest.raises(ConfigError, match="clip_len"):
        task_for(data_root, "model.dit.max_frames=4")
    with pytest.raises(ConfigError, match="window"):
        task_for(data_root, "model.window=7")
    with pytest.raises(ConfigError, match="chunk"):
        task_for(data_root, "model.window=2", "model.chunk=3")
    with pytest.raises(ConfigError, match="pixels:5"):
        task_for(data_root, "model.tokenizer=pixels:5")
    with pytest.raises(ConfigError, match="in_channels"):
        task_for(data_root, "model.dit.in_channels=7")
    with pytest.raises(ConfigError, match="num_interact"):
        task_for(data_root, "model.dit.actions.num_interact=1")
    with pytest.raises(CheckpointError, match="no-such-tokenizer"):
        task_for(data_root, "model.tokenizer=no-such-tokenizer")


def test_tokenizer_is_frozen_and_loss_goes_down(data_root):
    task = task_for(data_root, "model.latent_cache_mb=0")
    torch.manual_seed(0)
    net = task.build_model().train()
    assert not net.tokenizer.training
    assert net.no_weight_decay() == {"dit.blocks.0.modulation", "dit.blocks.1.modulation"}
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert all(p.requires_grad for p in net.dit.parameters()) and len(trainable) == len(
        list(net.dit.parameters())
    )
    batch = first_batch(task)
    opt = torch.optim.Adam(trainable, lr=2e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        loss, metrics = task.loss(net, batch, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["loss"])
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_latent_cache_matches_direct_encoding(data_root):
    task = task_for(data_root)
    net = task.build_model()
    calls = []
    encode = net.encode
    net.encode = lambda frames, **kw: calls.append(frames.shape[:2]) or encode(frames, **kw)
    batch = first_batch(task)
    z1 = task._cache.latents(net, batch["frames"], batch["episode"], batch["start"])
    z2 = task._cache.latents(net, batch["frames"], batch["episode"], batch["start"])
    assert len(calls) == 1  # the second call is served from the cache
    assert torch.allclose(z1, encode(batch["frames"]), atol=2e-3) and torch.equal(z1, z2)


def test_evaluate_and_export_round_trip(data_root):
    task = task_for(data_root)
    net = task.build_model()
    metrics = task.evaluate(net, max_batches=1)
    assert set(metrics) == {"loss", "loss_shuffled_actions", "action_gap", "next_frame_psnr"}
    assert 0 < metrics["next_frame_psnr"] <= 100
    assert metrics["action_gap"] == pytest.approx(metrics["loss_shuffled_actions"] / metrics["loss"] - 1)
    rebuilt = WorldTask.build_inference_model(task.export_config())
    rebuilt.load_state_dict(net.state_dict())
    batch = first_batch(task)
    x = net.encode(batch["frames"])
    t = torch.rand(x.shape[:2])
    acts = {
        "move": torch.zeros(4, 6, dtype=torch.long),
        "view": torch.zeros(4, 6, dtype=torch.long),
        "interact": torch.ones(4, 6, dtype=torch.long),
    }
    assert torch.equal(net(x, t, acts), rebuilt(x, t, acts))
    with pytest.raises(CheckpointError, match="incomplete"):
        WorldTask.build_inference_model({"dit": {}})


def world_for(data_root, **kw) -> tuple[WorldModel, np.ndarray]:
    task = task_for(data_root)
    net = task.build_model()
    frames = np.zeros((1, 3, 32, 32, 3), np.uint8)
    return WorldModel(net, make_memory("window", budget=4), RolloutConfig(chunk=2, **kw)), frames


def test_engine_api_and_errors(data_root):
    world, frames = world_for(data_root)
    acts = {"move": [[1, 2]], "view": [[3, 4]], "interact": [[0, 1]]}
    with pytest.raises(ConfigError, match="reset"):
        world.step(acts)
    world.reset(frames, {"move": [[1, 1]], "view": [[4, 4]], "interact": [[0, 0]]})
    assert world.index == 3
    out = world.step(acts, commit=False)
    assert out.shape == (1, 2, 32, 32, 3) and out.dtype == np.uint8 and world.index == 3
    world.observe(out[:, :1], {k: [v[0][:1]] for k, v in acts.items()})
    assert world.index == 4
    assert world.step(acts).shape == (1, 2, 32, 32, 3) and world.index == 6
    with pytest.raises(DataError, match=r"\[interact\]: ids must be in 0\.\.1 \(the model's range\)"):
        world.step({"move": [[1]], "view": [[1]], "interact": [[2]]})
    with pytest.raises(DataError, match=r"\[move\]: ids must be in 0\.\.\d+ .*got range -2\.\.-2"):
        world.step({"move": [[-2]], "view": [[1]], "interact": [[0]]})
    world.step({"move": [[-1]], "view": [[1]], "interact": [[0]]}, commit=False)  # NULL_ACTION: unknown
    with pytest.raises(DataError, match="interact"):
        world.step({"move": [[1]], "view": [[1]]})
    with pytest.raises(DataError, match="chunk"):
        world.step({"move": [[1, 1, 1]], "view": [[1, 1, 1]], "interact": [[0, 0, 0]]})
    with pytest.raises(DataError, match="frames"):
        world.reset(np.zeros((1, 2, 16, 16, 3), np.uint8))
    with pytest.raises(DataError, match="batch"):
        world.observe(
            np.zeros((2, 1, 32, 32, 3), np.uint8),
            {"move": [[1], [1]], "view": [[1], [1]], "interact": [[0], [0]]},
        )
    with pytest.raises(MemoryConfigError, match="local window"):
        WorldModel(world.net, make_memory("window", budget=7))
    with pytest.raises(ConfigError, match="chunk"):
        WorldModel(world.net, make_memory("window", budget=4), RolloutConfig(chunk=9))


def test_memory_registry_and_a_plugged_in_memory_context(data_root):
    assert "window" in memory_names()
    with pytest.raises(MemoryConfigError, match="known memories: .*window"):
        make_memory("nope")
    with pytest.raises(MemoryConfigError, match="unknown setting"):
        make_memory("window", budget=4, foo=1)
    with pytest.raises(MemoryConfigError, match="budget"):
        make_memory("window", budget=0)
    assert make_memory("window", budget=3).nbytes() == 0

    class FirstFrame(Memory):
        """Test strategy: always remember the very first frame, as pinned clean context."""

        name = "first-frame-test"

        def reset(self):
            self.first = None

        def write(self, latents, actions, poses, start_index):
            if start_index == 0:
                self.first = latents[:, :1].clone()

        def read(self, next_index, pose=None):
            if self.first is None:
                return None
            b = self.first.shape[0]
            null = torch.full((b, 1), -1, dtype=torch.long)
            return MemoryContext(
                self.first, {"move": null, "view": null, "interact": null}, torch.tensor([-float(next_index)])
            )

        def nbytes(self):
            return 0 if self.first is None else self.first.numel() * self.first.element_size()

    register_memory(FirstFrame.name, FirstFrame)
    world, frames = world_for(data_root)
    with torch.no_grad():  # random DiT weights so the context visibly matters
        for p in world.dit.parameters():
            p.normal_(0.0, 0.1)
    outs = []
    for mem in (make_memory("window", budget=2), make_memory(FirstFrame.name, budget=2)):
        w = WorldModel(world.net, mem, RolloutConfig(chunk=2, seed=1))
        rng = np.random.default_rng(0)
        w.reset(rng.integers(0, 256, (1, 3, 32, 32, 3), dtype=np.uint8))
        w.step({"move": [[1, 2]], "view": [[3, 4]], "interact": [[0, 1]]})
        outs.append(w.last_latents)
        # the memory's kept keys/values (one read at most) are rollout state too
        assert w.state_nbytes() == w.cache.nbytes() + mem.nbytes() + w.prefix.nbytes()
        assert (w.prefix.nbytes() > 0) == (mem.name != "window")
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)  # the pinned memory frame reached the chunk


def test_pixel_tokenizer_round_trip():
    tok = PixelTokenizer(4, (8, 12))
    frames = torch.randint(0, 256, (2, 5, 3, 8, 12), dtype=torch.uint8)
    z = tok.encode(frames)
    assert z.shape == (2, 5, 48, 2, 3)
    assert torch.allclose(tok.decode(z), frames.float() / 127.5 - 1.0, atol=1e-6)
    assert isinstance(WorldNet, type)


def test_models_live_in_models_and_old_imports_still_work():
    import infworld.models.loading as loading
    import infworld.models.tokenizers as tokenizers
    import infworld.models.worldnet as worldnet
    import infworld.train.export as export
    import infworld.train.tasks.world as task_module

    assert WorldNet is worldnet.WorldNet is task_module.WorldNet
    assert PixelTokenizer is tokenizers.PixelTokenizer is task_module.PixelTokenizer
    assert task_module.load_tokenizer is tokenizers.load_tokenizer
    assert task_module.build_tokenizer is tokenizers.build_tokenizer
    for name in ("load_model", "resolve_model_dir", "read_model_config", "list_models", "CONFIG", "WEIGHTS"):
        assert getattr(export, name) is getattr(loading, name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_from_pretrained_checks_the_device_first(tmp_path):
    # before any file is read: the folder does not even exist
    with pytest.raises(DeviceError, match="map_location cuda: CUDA is not available"):
        WorldModel.from_pretrained(str(tmp_path / "none"), map_location="cuda")
    with pytest.raises(DeviceError, match="map_location 'gpu': not a torch device"):
        WorldModel.from_pretrained(str(tmp_path / "none"), map_location="gpu")
