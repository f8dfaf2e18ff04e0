"""Where lines come from: stdin, tailed files, and `POST /ingest`."""
