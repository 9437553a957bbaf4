"""Personalization: turn kept pairs into a personal model. Never draws; the TUI and the CLI
drive it through ``tunechat.personalize.job``, which runs the heavy work in its own process."""
