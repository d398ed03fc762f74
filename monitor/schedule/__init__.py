"""The probe loops: one anyio loop per probe, fixed-rate and jittered, and the one owner of a
probe's deadline.
"""
