"""DC-09's AES-CBC (zero IV) built on one cached block cipher per key: the same bytes as a
fresh CBC context per message, whatever the keys and messages interleave."""

from __future__ import annotations

import threading

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from protocols import dc09
from protocols.errors import LocalProtocolError

_KEYS = st.sampled_from([bytes(range(16)), b"K" * 24, bytes(range(32)), b"\xff" * 16])
_BLOCKS = st.integers(1, 6).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n))


def _cbc(key: bytes, data: bytes, *, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    context = cipher.encryptor() if encrypt else cipher.decryptor()
    return context.update(data) + context.finalize()


@given(st.lists(st.tuples(_KEYS, _BLOCKS), min_size=1, max_size=8))
def test_cached_block_ciphers_give_what_a_fresh_cbc_context_gives(
    messages: list[tuple[bytes, bytes]],
) -> None:
    """Encrypt and decrypt, keys interleaved: byte for byte the fresh CBC context's result."""
    for key, data in messages:
        assert dc09._cbc_encrypt(key, data) == _cbc(key, data, encrypt=True)
        assert dc09._cbc_decrypt(key, data) == _cbc(key, data, encrypt=False)
        assert dc09._cbc_decrypt(key, dc09._cbc_encrypt(key, data)) == data


def test_partial_blocks_and_bad_keys_are_refused_before_the_cached_context() -> None:
    """A partial block would stay buffered in the shared context: refused, and the context
    still serves the next message correctly."""
    key = bytes(range(16))
    with pytest.raises(LocalProtocolError):
        dc09._cbc_decrypt(key, bytes(20))
    with pytest.raises(LocalProtocolError):
        dc09._cbc_encrypt(key, bytes(17))
    with pytest.raises(LocalProtocolError):
        dc09._cbc_encrypt(b"short", bytes(16))
    assert dc09._cbc_decrypt(key, bytes(32)) == _cbc(key, bytes(32), encrypt=False)


def test_each_thread_has_its_own_block_ciphers() -> None:
    """A context is never shared across threads."""
    key = bytes(range(16))
    mine = dc09._aes_blocks(key)
    theirs: list[object] = []
    thread = threading.Thread(target=lambda: theirs.append(dc09._aes_blocks(key)))
    thread.start()
    thread.join()
    assert theirs[0] is not mine
    assert dc09._aes_blocks(bytearray(key)) is mine  # type: ignore[arg-type]
