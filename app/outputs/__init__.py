"""Where results go: JSON-lines events and stats, the overlay and preview window, the web view."""
