"""What an operator sees: ``logs`` (JSON or text lines), ``metrics``
(Prometheus), ``tally`` (per-connection events counted into one line, and
failures in a window for /readyz)."""
