"""What a finished transcript becomes: subtitle formats and their rules, and speaker turns. Pure
functions of a transcript; imports nothing above it."""
