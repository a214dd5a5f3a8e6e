"""`python -m rate_limit_shield`: the `rate-limit-shield` command line."""

from .cli import main

raise SystemExit(main())
