"""The shared bytes: their state and merge rules, the Lamport clock, the wire codec, the replica
that keeps one room's copy in step with its peers, and the pace of our own changes. Pure."""
