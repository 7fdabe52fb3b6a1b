"""`python -m cio_worker ...` is the `cio-worker` command."""

from __future__ import annotations

import sys

from cio_worker.cli import main

sys.exit(main())
