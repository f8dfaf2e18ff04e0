"""`make verify`: the SPEC §10 checklist against a running stack (local or compose), one line per item.

    python -m gatewayz_tools.verify [--gateway URL] [--prometheus URL] [--loki URL] [--tempo URL]
                                    [--grafana URL] [--skip loki,tempo,grafana] [--wait 30]

Each item prints ✓ or ✗ with its evidence (counts, ids, ages) and, on ✗, the likely cause and the fix.
Exit status 1 if any item failed; skipped items (`--skip`) print - and do not count.

One module per component checked (`prometheus`, `loki`, `tempo`, `grafana`, `round_trip` for the item that
crosses Loki and Tempo), their shared `stack`, and `__main__` with the checklist's order and the flags.
"""
