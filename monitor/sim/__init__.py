"""Simulated environment for the demo and tests: loopback upstreams and a fake PagerDuty."""
