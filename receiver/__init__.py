"""The trio receiver service: listeners, store, registry, journal, supervisor, dispatcher, CLI.

Where a frame enters: ``receiver/ingest/`` (DC-09 TCP/UDP, one task for the whole port) and
``receiver/bridge_listener.py`` (video bridges). Where it is stored: ``receiver/journal.py``.
Where it leaves: ``receiver/dispatcher.py`` hands it to ``adapters/``.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("alarm-receiver")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
