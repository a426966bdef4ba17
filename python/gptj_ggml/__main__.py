"""``python -m gptj_ggml``: the same command line as ``gptj-ggml``."""

import sys

from .cli import main

sys.exit(main())
