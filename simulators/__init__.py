"""Simulators: panels, bridges and automation sinks built on the same codecs in the other role."""
