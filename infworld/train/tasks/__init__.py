"""Built-in tasks; importing this package registers them (see infworld/train/task.py)."""

from infworld.train.tasks import distill, tokenizer, world  # noqa: F401 (importing registers the tasks)
