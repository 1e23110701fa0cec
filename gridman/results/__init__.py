"""Results: the one row model, and what is made of rows (the table, aggregation, exports, plots).

Imports only ``core``: rows are built from XP folders, never by asking a backend.
"""
