"""Test support shared across rooms: servers and twins that tests run against on loopback."""
