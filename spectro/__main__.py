"""``python -m spectro`` (and the ``spectro`` console script): :func:`spectro.jobs.cli.main`.

Ctrl-C while the command's modules are still being imported is one line and exit status 130,
like Ctrl-C later on. After an interrupt or SIGTERM the process ends at once (``os._exit``) once
its one line is printed: everything spectro wrote is closed and its locks released by then, and
the interpreter's own finalization (garbage collection of torch's and numba's objects, beside an
abandoned kernel thread that is still computing) took 3 s on an idle 2-core machine and over 30 s
on a loaded one — a Ctrl-C must not look like a hang."""

import os
import sys

_STOPPED = (130, 143)  # interrupted (SIGINT), terminated (SIGTERM)


def run() -> int:
    try:
        from .jobs.cli import main
    except KeyboardInterrupt:
        print("spectro: interrupted; nothing was written", file=sys.stderr)
        return 130
    code = main()
    if code in _STOPPED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(run())
