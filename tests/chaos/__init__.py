"""Chaos suite: real redis-server, real worker processes and the sandbox's fault injection."""
