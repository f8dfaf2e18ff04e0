"""Developer commands: `stack` (make run), `verify` (make verify), `traffic` (make traffic)."""
