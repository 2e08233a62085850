"""The core every operation stands on: money, time windows, ids, the
keyspace, the protocol shared with the Lua scripts, script loading, and the
connection to Redis. Nothing here knows about ledgers, servers or CLIs."""
