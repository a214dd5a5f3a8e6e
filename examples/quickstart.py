"""The quickstart scenario, shown as it runs: the same as `rate-limit-shield demo`.

Run it with:  python examples/quickstart.py [--quick]

The scenario is `rate_limit_shield/demo.py`: one shielded function calls a fake gpt and a fake
claude through the fake provider; the shield retries, waits out a 429, opens gpt's breaker and
falls back to claude, probes gpt back, and paces a burst. Read it for the policies and the calls.
"""

import sys

from rate_limit_shield.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["demo", *sys.argv[1:]]))
