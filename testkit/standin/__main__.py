"""`python -m testkit.standin --port N`: the stand-in as a process of its own (the benchmarks' vLLM)."""

import sys

from testkit.standin.server import main

sys.exit(main())
