"""``python -m fcn_app`` is the same as the ``fcn-heatmap`` command."""

from .cli import main

if __name__ == "__main__":
    main()
