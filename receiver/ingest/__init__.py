"""Ingest: where frames enter. ``dc09_loop`` serves every DC-09 socket of a port in one task;
``intake`` is the one path from engine events to the journal and back."""
