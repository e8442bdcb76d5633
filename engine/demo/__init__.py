"""The demo shop served at /demo: a small catalog, its pages, and the one beacon tag."""
