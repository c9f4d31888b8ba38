"""The console at ``/console``: server-rendered pages for tenants and operators (usage, keys,
models), signed in with an API key or the admin token, held by an opaque server-side session."""
