"""`python -m chronos_moe.cli ...` runs the `chronos-moe` command line."""

import sys

from chronos_moe.cli import main

sys.exit(main())
