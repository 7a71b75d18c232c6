"""Infinite-World: interactive, action-conditioned video world models with long-horizon memory."""

__version__ = "0.1.0"
