"""The local stack: real Postgres and NATS JetStream from pip wheels, the four services as
separate processes, and the ``dwf`` CLI that drives them."""
