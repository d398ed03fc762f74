"""PagerDuty maintenance windows: the record, the poller that reads them, and the app's view of
them.
"""
