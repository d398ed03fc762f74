"""From states to people: the pure incident decisions and event content, the incident writer, the
durable outbox, Slack's message and the outbox's sinks (one module per destination, `sinks/`).
"""
