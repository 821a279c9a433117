"""Snapshot files, and consistent copies of the LMDB backend to stream and to restore from."""
