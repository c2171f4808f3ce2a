"""Detect: pull each connection's changed contacts and stage them (raw payload, hash,
normalized identity keys), advancing the cursor in the same transaction."""
