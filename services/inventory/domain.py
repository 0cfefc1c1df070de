"""Pure domain core of the inventory service: no I/O, unit- and property-tested."""
