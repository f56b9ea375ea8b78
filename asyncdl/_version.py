"""The package version, read from the installed package's metadata (pyproject.toml holds the one
copy), in a module of its own so that any module can import it without a cycle."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("asyncdl")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
