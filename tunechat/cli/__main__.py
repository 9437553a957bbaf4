"""``python -m tunechat.cli``: the same as the ``tunechat`` command."""

from tunechat.cli import main

raise SystemExit(main())
