import sys

from bridge.app.cli import main

sys.exit(main())
