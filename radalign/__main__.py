import sys

from radalign.cli import main

sys.exit(main())
