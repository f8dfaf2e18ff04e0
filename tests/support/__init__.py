"""Helpers shared by tests: free ports and real service processes on loopback."""
