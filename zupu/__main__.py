import sys

from zupu.cli import main

sys.exit(main())
