"""The Raft consensus state machine, sans-IO: no sockets, files, clocks, threads or asyncio;
randomness comes from an injected, seeded random.Random."""
