"""The trio receiver service: listeners, store, registry, journal, supervisor, dispatcher, CLI.

Where a frame enters: ``receiver/ingest/`` (DC-09 TCP/UDP, one task for the whole port) and
``receiver/bridge_listener.py`` (video bridges). Where it is stored: ``receiver/journal.py``.
Where it leaves: ``receiver/dispatcher.py`` hands it to ``adapters/``.
"""
