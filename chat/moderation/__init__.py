"""Moderation: bans (by name, by client address), mutes and deleted messages,
kept cluster-wide (``store``), enforced at login and at every message, and
recorded in a bounded audit trail; operators act through the HTTP API in
chat.web.moderation with a token from OPERATOR_TOKENS."""
