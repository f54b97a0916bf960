"""What an operator sees: ``logs`` (JSON or text lines), ``metrics``
(Prometheus), ``tally`` (per-connection events counted into one line, and
failures in a window for /readyz), ``gcpause`` (how long each garbage
collection stops the worker)."""
