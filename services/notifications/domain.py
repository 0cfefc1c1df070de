"""Pure domain core of the notifications service: no I/O, unit- and property-tested."""
