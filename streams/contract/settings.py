"""Where every component's settings come from besides the environment: ``marquee.env`` in the
working directory (``NAME=value`` lines, the variable names of ``marquee settings``). The
environment wins over the file, so one file can hold a deployment's settings and a shell can
still override one of them.
"""

from __future__ import annotations

ENV_FILE = "marquee.env"
