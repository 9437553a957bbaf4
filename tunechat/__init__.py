"""tunechat: a terminal chat with a local model that learns about you.

Layers, top to bottom (``tests/test_layering.py`` enforces them):

- ``tunechat.cli``: the ``tunechat`` command; wires the others together.
- ``tunechat.tui`` (folder ``tui/``): the Textual chat; draws, never trains.
- ``tunechat.personalize`` (folder ``personalize/``): training in its own process; never draws.
- ``tunechat.core``: store, engine, registry, chat templates, scope; imports nothing above it.
- ``tunechat.convert`` (folder ``convert/``): GGUF reading, writing and verifying; knows nothing of chat.
"""

__version__ = "0.1.0"
