"""`python -m grm.cli` (the same as the `grm` command)."""

import sys

from grm.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
