"""``python -m benchmarks [--quick] [--only accuracy,...] [--out DIR]``."""

import os
import sys

# Spinning OpenMP threads stall small flow steps: set before torch is first imported
# (the spawned workers inherit it, and set it again themselves).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from benchmarks.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
