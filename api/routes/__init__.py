"""HTTP routes, one module per resource; each handler is one store call or Engine command."""
