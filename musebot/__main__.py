import sys

from musebot.cli import main

sys.exit(main())
