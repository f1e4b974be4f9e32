"""Tests of the SMTP room: the sans-IO core fed bytes, and the listener on loopback driven by clients."""
