import sys

from musebot.bench.tokenize import main

sys.exit(main())
