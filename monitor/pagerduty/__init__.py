"""PagerDuty's APIs: Events v2 and REST through the official package, every request bounded."""
