"""``python -m benchmarks [--quick] [--only accuracy,...] [--out DIR]``."""

import sys

# Spinning OpenMP threads stall small flow steps: importing bgad_lite (benchmarks/__init__)
# sets OMP_WAIT_POLICY before torch is first imported; spawned workers import it again.
from benchmarks.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
