import shlex
import sys

try:
    from qtrain.cli import main
except KeyboardInterrupt:  # Ctrl-C while torch loads: one line, not a traceback
    print(f"qtrain: interrupted while starting; nothing was written: {shlex.join(['qtrain', *sys.argv[1:]])}",
          file=sys.stderr)
    sys.exit(130)

sys.exit(main())
