"""The core every part shares: paths, the SQLite store, JSONL, chat templates, the llama.cpp
engine, the scope rule and the model registry. It imports nothing above it (no TUI, no training)
and never torch or transformers."""
