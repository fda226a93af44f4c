"""radalign: pretrain image and report encoders on paired radiographs and reports."""

from radalign._version import __version__

__all__ = ["__version__"]
