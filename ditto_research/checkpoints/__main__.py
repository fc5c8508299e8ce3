"""``python -m ditto_research.checkpoints``: see :mod:`ditto_research.checkpoints.cli`."""

import sys

from ditto_research.checkpoints.cli import main

if __name__ == "__main__":
    sys.exit(main())
