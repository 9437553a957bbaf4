"""tunechat core: paths, the data store, the inference engine, the model registry and the CLI.

Nothing in this package imports torch or transformers; the TUI depends on that.
"""

__version__ = "0.1.0"
