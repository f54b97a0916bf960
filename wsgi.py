"""What gunicorn and the Procfile load: ``gunicorn -c gunicorn.conf.py wsgi:app``."""

from chat import create_app

app = create_app()
