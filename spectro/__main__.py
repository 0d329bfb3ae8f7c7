"""``python -m spectro`` (and the ``spectro`` console script): :func:`spectro.jobs.cli.main`.

Ctrl-C while the command's modules are still being imported is one line and exit status 130,
like Ctrl-C later on."""

import sys


def run() -> int:
    try:
        from .jobs.cli import main
    except KeyboardInterrupt:
        print("spectro: interrupted; nothing was written", file=sys.stderr)
        return 130
    return main()


if __name__ == "__main__":
    sys.exit(run())
