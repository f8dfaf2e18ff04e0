"""Providers: the catalog, the `local` and `openai` kinds, health windows and the router with fallback."""
