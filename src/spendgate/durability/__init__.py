"""What keeps facts safe while Redis is away: the circuit breaker in front of
the store, the durable local spool, and the replay that drains it."""
