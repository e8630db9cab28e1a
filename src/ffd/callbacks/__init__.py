"""Lightning callbacks of ffd."""
