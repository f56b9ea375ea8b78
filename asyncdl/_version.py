"""The package version, in a module of its own so that any module can import it without a cycle.

pyproject.toml reads it from here (``[tool.setuptools.dynamic]``): one place to change.
"""

__version__ = "0.1.0"
