"""`python -m sparsedepth.bench`: run with OMP_WAIT_POLICY=PASSIVE unless the caller chose a policy."""

import os
import sys

from .cli import main

if __name__ == "__main__":
    if "OMP_WAIT_POLICY" not in os.environ:
        # OpenMP threads that spin-wait stall for whole time slices when the cores are shared (measured
        # here: 18x slower decode at 2 threads); libgomp reads this only at load, so re-run with it set
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "sparsedepth.bench", *sys.argv[1:]])
    sys.exit(main())
