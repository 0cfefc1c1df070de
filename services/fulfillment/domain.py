"""Pure domain core of the fulfillment service: no I/O, unit- and property-tested."""
