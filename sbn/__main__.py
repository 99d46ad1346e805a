"""Run the ``sbn`` command line as ``python -m sbn``."""
import sys

from .cli import main

sys.exit(main())
