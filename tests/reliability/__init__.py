"""The reliability and security suite (issue 9): faults, floods and bad input against real service processes.

A package so its helpers import as `reliability.<module>` and its test modules cannot clash by basename with
tests elsewhere. CI runs the short version; `RELIABILITY_FULL=1` (or `make reliability`) the long one.
"""
