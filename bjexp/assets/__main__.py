import sys

from bjexp.assets.cli import main

sys.exit(main())
