"""tmrl: distributed real-time reinforcement learning on video games.

Importing this package has no side effects; the roles live in their own modules (``tmrl.worker``,
``tmrl.net.server``, ``tmrl.trainer``) and the Rust hot path in ``tmrl._core``.
"""

__version__ = "0.1.0"
