"""``make bench``: our chat against Node socket.io with its Redis adapter."""
