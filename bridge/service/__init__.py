"""Use cases: one function per thing a user does, each inside one unit of work."""
