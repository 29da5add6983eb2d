"""Small shared helpers: config validation and the experiment output contract."""
