"""`python -m patvm ...`: the `patvm` command (useful to run a checkout from PYTHONPATH)."""
import sys

from patvm.cli import main

sys.exit(main())
