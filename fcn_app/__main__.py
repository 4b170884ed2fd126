"""``python -m fcn_app`` and the ``fcn-heatmap`` command: the start-up, then the command line."""

import sys

from .startup import warm_start


def main() -> None:
    """Entry point of the ``fcn-heatmap`` console script: :func:`~fcn_app.startup.warm_start` (which imports no
    torch), then :func:`fcn_app.cli.main`, whose import brings in torch while the start-up's decode runs."""
    warm_start(sys.argv[1:])
    from .cli import main as command_line

    command_line()


if __name__ == "__main__":
    main()
