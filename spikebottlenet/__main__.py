"""Run the ``sbn`` command line as ``python -m spikebottlenet``."""

import sys

from spikebottlenet.sbn.cli import main

sys.exit(main())
