"""One SQLite job store (WAL) shared by listen and batch: placeholder, replaced by its module."""
