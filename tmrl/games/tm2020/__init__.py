"""TrackMania 2020: OpenPlanet plugin source (``plugin/``), window placement (``window``), capture backends
(``capture``), control backends (``control``) and the ``TM2020Game`` (``game``). See docs/tm2020.md."""
