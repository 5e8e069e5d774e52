"""Matrix Clubs: chat infrastructure for Communication Clubs on Matrix."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("matrix-clubs")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"
