"""`python -m fsm`: the same as the `fsm` command."""

import sys

from fsm.cli import main

sys.exit(main())
