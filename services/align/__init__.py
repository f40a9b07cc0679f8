"""The align service: gives every word of a transcript its start and end time."""
