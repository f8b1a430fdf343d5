#!lua flags=allow-oom
-- lockproxy: PERSIST of a lock key, refused: the lock keeps its TTL and the client gets 0.
-- Sent instead of answering locally so that Redis still judges the command the client sent:
-- the shebang makes Redis treat the script as it treats PERSIST (a write: -READONLY on a
-- read-only replica, -MASTERDOWN on a stale one, -NOREPLICAS; runs under maxmemory), and
-- KEYS[1], the lock, is checked against the client's ACL key patterns as PERSIST's key is.
-- Returns 0, what PERSIST answers when it changed nothing.
return 0
