"""Deliver signals to automation platforms: Sentinel-style XML packages and Sur-Gard output."""
