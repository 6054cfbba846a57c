import sys

from clustering.cli import main

sys.exit(main())
