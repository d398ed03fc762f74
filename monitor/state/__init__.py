"""The live state: probe results in, dependency and feature states out (pure health, impact and
graph rules; the engine that keeps them; depmon's view of itself).
"""
