"""Who is online: ``member`` (one logged-in connection), ``memory`` (one
instance), ``redis_store`` / ``scripts`` / ``upkeep`` (a cluster: joins and
leaves, the heartbeat, reaping of dead instances, hand-over), ``sharded``
(the same on a Redis Cluster, each script within one room's slot), ``rooms``
(the room cap), ``counts`` (the newest count of each room)."""
