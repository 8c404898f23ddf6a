"""The package version, in one place (pyproject.toml reads it from here)."""

#: The version of spikecode (stats files record it as ``spikecode_version``).
__version__ = "0.1.0"
