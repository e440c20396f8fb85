"""The web dashboard at ``/dashboard``: browser sessions (sign-in with an API key or a password, an
HttpOnly cookie, CSRF tokens) and the pages, served by Trellis itself from this package's
``templates/`` and ``static/``. The pages' data comes from the REST API, called by the page's own
script with the session cookie, so every number a page shows is the one the API answers."""
