"""geodet: object detection over huge georeferenced rasters, on Ray."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("geodet")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from geodet.api import detect
from geodet.errors import GeodetError, InputError, PartialRunError
from geodet.options import Options

__all__ = ["GeodetError", "InputError", "Options", "PartialRunError", "__version__", "detect"]
