"""syncd — mirror SuperOffice CRM contact and person pictures into Dynamics 365 Business Central."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one source of the version is the package metadata (pyproject.toml's [project] version),
    # which an editable install (`pip install -e .`) provides as well as a wheel.
    __version__ = version("syncd")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"
