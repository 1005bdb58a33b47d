import sys

from tophosts.cli import main

sys.exit(main())
