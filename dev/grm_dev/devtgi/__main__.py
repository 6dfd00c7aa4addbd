"""`python -m grm_dev.devtgi` (the same as `grm dev-tgi`)."""

import sys

from grm_dev.devtgi.main import main

if __name__ == "__main__":
    sys.exit(main())
