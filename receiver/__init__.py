"""The trio receiver service: listeners, store, registry, journal, supervisor, dispatcher, CLI.

Where a frame enters: ``receiver/dc09_listener.py`` (DC-09 TCP/UDP) and
``receiver/bridge_listener.py`` (video bridges). Where it is stored: ``receiver/journal.py``.
Where it leaves: ``receiver/dispatcher.py`` hands it to ``adapters/``.
"""
