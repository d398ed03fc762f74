"""The bundled VA mobile configuration; installed as the package data `monitor.bundled`."""
