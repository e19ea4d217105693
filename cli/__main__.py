"""``python -m cli COMMAND``: the same as the ``cvops`` command."""

from cli import main

raise SystemExit(main())
