"""`python -m sparsedepth.gpucheck`: with OMP_WAIT_POLICY=PASSIVE unless the caller chose (as the benchmark's
own entry point, whose reason holds for the timings here too)."""

import os
import sys

from . import main

if __name__ == "__main__":
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "sparsedepth.gpucheck", *sys.argv[1:]])
    sys.exit(main())
