"""A message's way from its sender to every user of its room.

Read in this order: ``entries`` (what a message is), ``outbox`` (storing it:
the stream, or the outbox while Redis is away), ``stream`` / ``memory`` (the
history of a cluster, of one instance), ``fanout`` (who receives it, the one
place that decides), ``delivered`` (what this instance delivered, once
each), ``tails`` (each hosted room's newest messages, so a login needs no
read), ``catchup`` (a login's history).
"""
