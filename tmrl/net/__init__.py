"""The relay: wire protocol, ``RelayServer`` (asyncio) and the worker / trainer / observer clients.

Importing this package imports nothing else; pick the module you need (``tmrl.net.server`` never imports numpy).
"""
