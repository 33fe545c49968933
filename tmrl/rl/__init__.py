"""The learning side: configuration, networks, SAC / REDQ, replay memory, checkpoints, metrics.

``learner.Learner`` ties them together and is shared by the relay-connected ``tmrl.trainer.Trainer`` and the
synchronous loop ``sync.train_sync``. Importing this package imports nothing heavy.
"""
