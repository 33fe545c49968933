"""The built-in racing game: CarRacing-v3 physics in its own process (``process``), its world and renderer
(``sim``), the shared-memory block (``shm``), the agent-side ``CarRacingGame`` (``game``) and a scripted pilot
(``pilot``). Open it with ``tmrl.games.open_game(CarRacingConfig(...))``."""
