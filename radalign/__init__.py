"""radalign: pretrain image and report encoders on paired radiographs and reports.

>>> import radalign
>>> model = radalign.load("tiny")            # or a directory written by model.save_pretrained
>>> tokens = model.tokenize(["No pleural effusion."])
"""

from radalign._version import __version__

__all__ = ["__version__", "load"]


def __getattr__(name: str):
    # Lazy: `import radalign` stays cheap (no torch) for the CLI's --version and --help.
    if name == "load":
        from radalign.encoders.loading import load

        return load
    raise AttributeError(f"module 'radalign' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The exported API (what ``from radalign import *`` and tab completion offer)."""
    return sorted(__all__)
