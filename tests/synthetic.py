"""Synthetic datasets shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np

from infworld.data.episode import DatasetMeta, Episode, episode_path, write_episode, write_meta


def make_dataset(
    root, episodes: int = 3, length: int = 24, size: int = 32, vocab=("none", "use"), seed: int = 0,
    interact_max: int | None = None,
):
    """A square that the move actions push around a checkerboard: frames follow the actions."""
    rng = np.random.default_rng(seed)
    write_meta(root, DatasetMeta(env="synthetic", size=(size, size), interact_vocab=list(vocab)))
    yy, xx = np.mgrid[:size, :size]
    board = ((xx // 4 + yy // 4) % 2 * 60 + 40).astype(np.uint8)
    for e in range(episodes):
        move = rng.integers(0, 9, length - 1)
        x = y = size // 2
        frames, pose = [], []
        for t in range(length):
            if t:
                y = int(np.clip(y - 2 * (move[t - 1] // 3 - 1), 4, size - 5))
                x = int(np.clip(x + 2 * (move[t - 1] % 3 - 1), 4, size - 5))
            img = np.repeat(board[..., None], 3, axis=-1)
            img[y - 3 : y + 3, x - 3 : x + 3] = (230, 80, 40)
            frames.append(img)
            pose.append([x, y, 0.0, 0.0, 0.0])
        ep = Episode(
            np.stack(frames),
            move,
            rng.integers(0, 10, length - 1),
            rng.integers(0, (len(vocab) - 1 if interact_max is None else interact_max) + 1, length - 1),
            pose=np.asarray(pose, np.float32),
        )
        write_episode(episode_path(root, e), ep)
    return root


def memory_task(root, *overrides: str):
    """The world task of the ``tiny-test-memory`` recipe on the dataset at ``root``."""
    from infworld.train.recipe import load_recipe
    from infworld.train.tasks.world import WorldTask

    recipe = load_recipe("tiny-test-memory", [f"data.root={root}", *overrides])
    return WorldTask(recipe.model, recipe)


def train_steps(task, net, opt, steps: int = 3, strategy: str = "full") -> None:
    """``steps`` optimiser steps of ``task``'s loss on one training batch of 2 clips (fixed noise)."""
    import torch

    batch = next(task.batches("train", 2, seed=0, rank=0, world_size=1))
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss, _ = task.loss(net, batch, g, strategy=strategy)
        opt.zero_grad()
        loss.backward()
        opt.step()
