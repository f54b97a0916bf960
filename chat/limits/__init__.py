"""Budgets: ``buckets`` (the one token bucket, per key and per connection),
``clients`` (what one client holds open), ``admission`` (logins in flight)."""
