"""`python -m rate_limit_shield.testing.provider`: the fake provider on its own."""

from .cli import main

raise SystemExit(main())
