"""This replica among replicas: heartbeat, leadership, and the quorum's verdicts (pure)."""
