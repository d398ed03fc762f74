"""From states to people: the pure incident decisions and event content, the incident writer, the
durable outbox and Slack.
"""
