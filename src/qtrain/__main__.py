import sys

from qtrain.cli import main

sys.exit(main())
