"""Built-in tasks; importing this package registers them (see infworld/train/task.py)."""

import importlib

for _name in ("tokenizer", "world"):
    try:
        importlib.import_module(f"infworld.train.tasks.{_name}")
    except ModuleNotFoundError as exc:  # a task not built yet
        if exc.name != f"infworld.train.tasks.{_name}":
            raise
