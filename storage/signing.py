"""Signed stores: an HMAC-SHA256 key vouches for every row that holds code or binaries.

A store is code: loading a model imports its wrapper and launches its cubins. The content
hash (``storage.integrity``) catches corruption, but anyone who can write the store can
also recompute a hash. A key that the serving host holds and the store does not closes
that: a store written with a key carries in every graphs, modules, kernels and binaries row

    signature = HMAC-SHA256(key, content_hash + the row's lookup labels)

(``SIGNED_LABELS``: the unhashed columns a reader chooses rows by, such as ``modules.model``,
so a signed module cannot be served under another model's name), and at its root a marker
file (``MARKER``) naming the key's fingerprint, never the key. The marker is written
atomically on the first signed write.

Who trusts what (``Store`` applies it; ``storage.reader`` drops and reports the rows):

- a reader with a key uses only rows whose signature verifies with it, whether or not the
  marker is there (deleting the marker must not turn signing off);
- a reader without a key refuses a store that has a marker (``StoreKeyError``);
- a writer without a key, or with another key, refuses to write to a signed store.

Example:
    >>> import pyarrow as pa
    >>> key = StoreKey(b"0123456789abcdef0123456789abcdef")
    >>> t = pa.table({"kernel_key": ["k"], "content_hash": ["ab" * 32]})
    >>> t = with_signatures("kernels", t, key)
    >>> bad_signatures("kernels", t, key)
    []
    >>> other = StoreKey(b"another key, also 32 bytes long!")
    >>> [(i, why.split(" with key")[0]) for i, why in bad_signatures("kernels", t, other)]
    [(0, 'signature does not verify')]
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Mapping

import pyarrow as pa
import pyarrow.fs as pafs

from .files import TEMP_PREFIX, is_local
from .integrity import hash_values

MARKER = "kiln-signed.json"
ALGORITHM = "hmac-sha256"
MIN_KEY_BYTES = 16
KEY_HELP = ("set KILN_STORE_KEY_FILE to a file holding the store's key (or KILN_STORE_KEY to "
            "the key itself)")

# Columns a reader selects rows by that the content hash does not cover (they were added
# after rows were first hashed): the signature covers them, so relabelling a signed row
# (another model's name, another GPU's tuning, a failed build marked ok) breaks it.
SIGNED_LABELS: Mapping[str, tuple[str, ...]] = {
    "graphs": ("source_key",),
    "modules": ("tuned_for", "model"),
    "kernels": (),
    "binaries": ("status", "error"),
}


class StoreKeyError(RuntimeError):
    """A signed store used without its key (or with another key); the message says which
    key the store wants and how to configure it."""


class KeyFrom(Enum):
    """Where ``Store`` takes its key when none is given: kiln's configuration
    (``compiler.config.store_signing_key``)."""
    CONFIG = "config"


@dataclass(frozen=True)
class StoreKey:
    """An HMAC-SHA256 key. ``fingerprint`` names it in markers and messages without
    revealing it; ``repr`` never shows the secret."""
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise ValueError(f"a store key needs at least {MIN_KEY_BYTES} bytes, got "
                             f"{len(self.secret)} (make one: openssl rand -hex 32 > KEYFILE)")

    @property
    def fingerprint(self) -> str:
        return hmac.new(self.secret, b"kiln store key fingerprint",
                        hashlib.sha256).hexdigest()[:16]

    def sign(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()


def resolve_key(key: "bytes | StoreKey | KeyFrom | None") -> StoreKey | None:
    """A ``Store``'s key argument as a ``StoreKey``: bytes are wrapped, ``KeyFrom.CONFIG``
    reads kiln's configuration (the environment, through ``compiler.config``)."""
    if key is KeyFrom.CONFIG:
        from compiler.config import store_signing_key
        key = store_signing_key()
    if key is None or isinstance(key, StoreKey):
        return key
    return StoreKey(bytes(key))


def _message(content_hash: str, labels: list) -> str:
    return content_hash if not labels else hash_values([content_hash, *labels])


def _messages(kind: str, table: pa.Table) -> list[str]:
    hashes = table.column("content_hash").to_pylist()
    labels = [table.column(name).to_pylist() if name in table.column_names
              else [None] * table.num_rows for name in SIGNED_LABELS[kind]]
    return [_message(h, [column[i] for column in labels]) for i, h in enumerate(hashes)]


def with_signatures(kind: str, table: pa.Table, key: StoreKey) -> pa.Table:
    """``table`` (with its content hashes) with every row's ``signature`` made by ``key``."""
    signatures = pa.array([key.sign(m) for m in _messages(kind, table)], pa.string())
    if "signature" in table.column_names:
        return table.set_column(table.column_names.index("signature"), "signature",
                                signatures)
    return table.append_column("signature", signatures)


def bad_signatures(kind: str, table: pa.Table, key: StoreKey) -> list[tuple[int, str]]:
    """(row index, why) of every row whose signature is missing or not made by ``key``."""
    if table.num_rows == 0:
        return []
    stored = (table.column("signature").to_pylist() if "signature" in table.column_names
              else [None] * table.num_rows)
    problems = ((i, signature_problem(message, got, key))
                for i, (message, got) in enumerate(zip(_messages(kind, table), stored)))
    return [(i, why) for i, why in problems if why]


def row_signature_problem(kind: str, row: Mapping, key: StoreKey) -> str | None:
    """Why one row (a dict with its content hash, labels and signature) does not verify
    with ``key``, or None: ``bad_signatures`` for a reader that goes row by row."""
    message = _message(row["content_hash"], [row.get(name) for name in SIGNED_LABELS[kind]])
    return signature_problem(message, row.get("signature"), key)


def signature_problem(message: str, signature: str | None, key: StoreKey) -> str | None:
    if signature is None:
        return f"unsigned row (rows must be signed with key {key.fingerprint})"
    if not hmac.compare_digest(key.sign(message), signature):
        return (f"signature does not verify with key {key.fingerprint}: signed with another "
                f"key, or edited after signing")
    return None


@dataclass(frozen=True)
class Marker:
    """What a signed store's root says about its key."""
    fingerprint: str
    algorithm: str = ALGORITHM


def marker_path(root: str) -> str:
    return f"{root}/{MARKER}"


def read_marker(fs: pafs.FileSystem, root: str) -> Marker | None:
    """The store's marker, or None for an unsigned store. An unreadable marker is a
    ``StoreKeyError``: a store that may be signed is never read as an unsigned one."""
    path = marker_path(root)
    try:
        with fs.open_input_stream(path) as stream:
            data = json.loads(stream.read())
        return Marker(fingerprint=str(data["key_fingerprint"]),
                      algorithm=str(data.get("algorithm", ALGORITHM)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StoreKeyError(f"{path}: unreadable signing marker ({err}); the store may be "
                            f"signed, so it is not read as an unsigned one") from None


def write_marker(fs: pafs.FileSystem, root: str, key: StoreKey) -> None:
    """Write the marker naming ``key``'s fingerprint, atomically (temporary name, rename)."""
    fs.create_dir(root, recursive=True)
    body = json.dumps({"algorithm": ALGORITHM, "key_fingerprint": key.fingerprint},
                      indent=1).encode()
    final = marker_path(root)
    tmp = f"{root}/{TEMP_PREFIX}{MARKER}.{uuid.uuid4().hex[:12]}"
    with fs.open_output_stream(tmp) as sink:
        sink.write(body)
    if is_local(fs):
        os.replace(tmp, final)
    else:
        fs.move(tmp, final)


def refusal(root: str, marker: Marker) -> str:
    """The message of a signed store used without its key."""
    return f"store {root} is signed (key {marker.fingerprint}); {KEY_HELP}"
