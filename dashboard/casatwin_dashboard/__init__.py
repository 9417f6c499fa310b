"""The live dashboard, the kiosk and the history API of CasaTwin (one aiohttp application).

``casatwin dashboard`` runs it. The pieces, each with one job:

``positions``   the latest position of every vehicle and the binary frames that carry them
``live``        what the screens show besides positions: infractions, units, congestion, plot
``privacy``     masking of driver identities for public views
``feed``        Kafka readers on their own threads, handing decoded batches to the event loop
``fanout``      per-client queues, coalesced positions, slow clients disconnected
``history``     the history API over the read model (MongoDB)
``operators``   operators, passwords, sessions, login rate limit, identity-view audit (MariaDB)
``citymap``     the city pack's geometry as the JSON the map draws
``app``         the aiohttp application that wires them
"""
