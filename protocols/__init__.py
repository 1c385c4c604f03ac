"""Sans-IO codecs: bytes in, events out; events in, bytes out.

Rules: no trio, no sockets, no serial ports, no databases, no logging here. Everything in this
package is deterministic given its inputs (the caller passes the clock and the randomness source
where a codec needs them), so the receiver and the simulators share the same code.
"""
