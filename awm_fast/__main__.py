import sys

from awm_fast.cli import main

sys.exit(main())
