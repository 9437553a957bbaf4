"""The Textual chat. It draws and talks to the user; it never trains (see personalize/)."""
