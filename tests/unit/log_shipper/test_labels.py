"""Static labels: Loki's name grammar, value length and label-count limits, checked at startup."""

from __future__ import annotations

import pytest

from log_shipper.labels import parse_static_labels


class TestStaticLabels:
    def test_pairs_become_labels(self):
        """`name=value` pairs, whitespace trimmed."""
        assert parse_static_labels(("team = obs", "region=eu")) == {"team": "obs", "region": "eu"}

    @pytest.mark.parametrize("pair", ["my-team=x", "1team=x", "team", "team=", "__name=x"])
    def test_names_and_values_loki_would_refuse(self, pair):
        """A dash, a leading digit, no value, or a reserved `__` name is refused with the variable's name."""
        with pytest.raises(ValueError, match="SHIPPER_STATIC_LABELS"):
            parse_static_labels((pair,))

    def test_per_line_labels_cannot_be_static(self):
        """`service`, `level` and `environment` come from each line, not from configuration."""
        with pytest.raises(ValueError, match="set per line"):
            parse_static_labels(("level=INFO",))

    def test_too_many_labels(self):
        """With the three per-line labels and Loki's own `service_name`, at most 11 static ones fit."""
        parse_static_labels(tuple(f"l{i}=v" for i in range(11)))
        with pytest.raises(ValueError, match="at most 11"):
            parse_static_labels(tuple(f"l{i}=v" for i in range(12)))

    def test_value_too_long(self):
        """Loki refuses label values over 2,048 characters."""
        with pytest.raises(ValueError, match="2048"):
            parse_static_labels(("team=" + "x" * 2049,))
