"""The HTTP front-end: health endpoint, portal pages and the admin API."""
