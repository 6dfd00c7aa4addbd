"""`python -m grm.devtgi` (the same as `grm dev-tgi`)."""

import sys

from grm.devtgi.main import main

if __name__ == "__main__":
    sys.exit(main())
