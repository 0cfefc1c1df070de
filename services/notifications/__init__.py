"""Notifications: channel status propagation, signed, ordered, retried, replayable."""
