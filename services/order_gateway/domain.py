"""Pure domain core of the order_gateway service: no I/O, unit- and property-tested."""
