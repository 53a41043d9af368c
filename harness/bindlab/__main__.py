"""``python -m bindlab``: the same as the ``bindlab`` command."""

from bindlab.cli import main

raise SystemExit(main())
