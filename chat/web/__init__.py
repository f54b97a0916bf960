"""What HTTP serves: the page, ``/healthz``, ``/readyz``, ``/metrics``
(``views``), the socket.io client bundle (``bundle``), the Host and drain
checks and safety headers around everything (``guards``), and the Flask
app's classes (``app``)."""
