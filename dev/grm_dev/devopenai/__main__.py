"""`python -m grm_dev.devopenai` (the same as `grm dev-openai`)."""

import sys

from grm_dev.devopenai.main import main

if __name__ == "__main__":
    sys.exit(main())
