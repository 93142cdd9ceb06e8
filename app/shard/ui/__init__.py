"""The tray application: a thin Qt layer that observes and commands the asyncio core (node.py).
qasync runs the one asyncio loop on Qt's loop; nothing here blocks it."""
