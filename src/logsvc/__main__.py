"""Allow ``python -m logsvc``."""

from logsvc.cli import main

raise SystemExit(main())
