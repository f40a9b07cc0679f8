"""`python -m gateway.cli`: the `subtitler` command."""

import sys

from gateway.cli.main import main

sys.exit(main())
