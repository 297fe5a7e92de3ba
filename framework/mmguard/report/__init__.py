"""Results tables and reports."""
