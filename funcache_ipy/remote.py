"""The shared tier: signed entries on any fsspec URL (``s3://``, ``gs://``, ``file://``).

The local store asks this tier on a miss and fills itself from what it gets; what it
stores, it hands over to be uploaded. Keys are content-addressed, so two writers of one
key write the same result: last-writer-wins is safe and no lock is needed.

Layout under the URL's prefix, one folder per signer (:attr:`PublicKey.id`)::

    <prefix>/<signer-id>/<key>        a signed value (its first buffer is its metadata)
    <prefix>/<signer-id>/<key>.meta   the signed metadata alone: listing reads only these

A reader looks in its own folder, then in those of the keys it trusts
(``FUNCACHE_IPY_TRUST``). Writers only ever write their own folder, so entries by
different signers never overwrite each other and an untrusted writer cannot replace or
evict a trusted entry. An object that fails verification is a quiet miss and is left
where it is: deleting what you cannot read is only safe when you are the only writer.
Eviction on the remote is the bucket's lifecycle policy (or a cron job on a shared
folder); ``%funcache clear --remote`` deletes only the caller's own folder.

Faults never cost a result: a read-only remote (CI publishes, others read) stops uploads
after one warning; an unreachable one turns the tier off for the session after one
warning. Uploads run on a background thread; at exit they are finished (for up to
:data:`EXIT_WAIT` seconds) or a warning says how many were lost. Worker processes
(Dask, joblib, process pools) upload before returning, as they may be stopped any time.

Credentials and endpoints come from the backend's own configuration (for S3: the AWS
environment variables, ``~/.aws`` profiles, instance roles), never from funcache_ipy.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final, NamedTuple

from funcache_ipy.environment import environ

if TYPE_CHECKING:
    from funcache_ipy.signing import PayloadDigest, PublicKey

__all__ = [
    "EXIT_WAIT",
    "REMOTE_ENV",
    "TRUST_ENV",
    "RemoteSpec",
    "RemoteTier",
    "tier_for",
]

REMOTE_ENV: Final = "FUNCACHE_IPY_REMOTE"
TRUST_ENV: Final = "FUNCACHE_IPY_TRUST"
EXIT_WAIT: Final = 300.0  # seconds the exiting process waits for pending uploads
_META_SUFFIX = ".meta"
# A value larger than one chunk downloads as ranged reads, _PARALLEL at a time, and each
# chunk is hashed while later ones arrive (s3fs's own cat_file also splits at 50 MB).
_CHUNK = 32 * 2**20
_PARALLEL = 4

Warn = Callable[[str], None]
Found = tuple[memoryview, list[memoryview], str]
"""A verified value: pickle stream, its buffers, its metadata (JSON text)."""


class RemoteSpec(NamedTuple):
    """A remote as a worker receives it with a pickled function.

    ``trust``: public keys (text form) trusted besides the worker's own key and its
    ``FUNCACHE_IPY_TRUST``: the sender's key and trust list, so the worker hits what the
    notebook stored. ``wait``: upload before returning (a worker may be stopped any time).
    """

    url: str
    trust: tuple[str, ...] = ()
    wait: bool = False


class RemoteTier:
    """One remote location as seen by this user: own signer, trusted signers, uploads."""

    def __init__(self, spec: RemoteSpec, warn: Warn) -> None:
        """Connect to ``spec.url`` and load this user's signing key.

        Raises:
            ImportError: fsspec, the URL's backend (s3fs, gcsfs) or cryptography is
                missing; the message says what to install.
            ValueError: a trusted key is malformed; the message shows it.
            OSError: the signing key cannot be created or read.
        """
        from funcache_ipy.signing import INSTALL_HINT, PublicKey, Signer

        try:
            import fsspec
        except ImportError as exc:
            raise ImportError(f"sharing a cache needs fsspec: {INSTALL_HINT}") from exc
        self.url = spec.url
        self._warn = warn
        self._wait = spec.wait
        try:
            self._fs, root = fsspec.core.url_to_fs(spec.url)
        except ImportError as exc:
            raise ImportError(f"{exc}; for s3:// URLs: {INSTALL_HINT}") from exc
        self._root = root.rstrip("/")
        self._atomic_rename = "file" in self._fs.protocol  # NB. S3 puts are atomic already
        self.signer = Signer.load()
        trusted: dict[str, PublicKey] = {self.signer.public.id: self.signer.public}
        for text in spec.trust:
            public = PublicKey.parse(text)
            trusted.setdefault(public.id, public)
        self.trusted = list(trusted.values())
        self._read_only = False  # a write was refused: keep reading, stop uploading
        self._off = False  # unreachable or refused reads: the tier is off this session
        self._reported: set[str] = set()
        self._made: set[str] = set()
        self._queue: queue.Queue[tuple[str, bytearray, bytes]] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"RemoteTier({self.url!r}, signer {self.signer.public.id})"

    def for_worker(self) -> RemoteSpec:
        """This remote as a worker should use it for a function pickled here.

        Carries this user's public key and trust list, so the worker hits what this
        process stored even if it signs with a key of its own (on another machine).
        """
        return RemoteSpec(self.url, tuple(public.text() for public in self.trusted), wait=True)

    # -- reading

    def get(self, key: str) -> Found | None:
        """The value of ``key`` signed by this user or a trusted signer, verified; else None.

        Own folder first, then trusted signers in order. Unverifiable objects are skipped
        quietly (and left in place).
        """
        from funcache_ipy.signing import KIND_VALUE, BadSignature

        for public in self._trusted_readable():
            received = self._download_hashing(self._path(public.id, key))
            if received is None:
                continue
            data, digest = received
            try:
                stream, buffers = public.verify(data, KIND_VALUE, key, digest)
                tag = bytes(buffers[0]).decode()
            except (BadSignature, IndexError, UnicodeDecodeError):
                continue
            return stream, buffers[1:], tag
        return None

    def meta(self, key: str) -> str | None:
        """The metadata (JSON text) of ``key``'s entry, from its small ``.meta`` object."""
        for public in self._trusted_readable():
            tag = self._read_meta(public, self._path(public.id, key) + _META_SUFFIX, key)
            if tag is not None:
                return tag
        return None

    def entries(self) -> Iterator[tuple[str, str, str | None]]:
        """``(signer id, key, metadata JSON)`` of each entry of this user and trusted signers.

        Reads the small ``.meta`` objects only, never a value, so listing a bucket costs
        what its metadata weighs. The JSON is None where an object fails verification (it
        is left in place) or vanished since it was listed. This process's pending uploads
        are finished first, so its own entries are listed; nothing is read once the tier
        is off (see :attr:`reachable`).
        """
        self.flush()
        for public in self._trusted_readable():
            for path in self._metadata_paths(public.id):
                key = path.rpartition("/")[2][: -len(_META_SUFFIX)]
                tag = self._read_meta(public, path, key)
                if self._off:
                    break
                yield public.id, key, tag
            if self._off:  # NB. the failure was reported once; the rest would fail too
                return

    @property
    def reachable(self) -> bool:
        """False once a read failed: the tier is off for the rest of the session."""
        return not self._off

    def _trusted_readable(self) -> list[PublicKey]:
        return [] if self._off else self.trusted

    def _read_meta(self, public: PublicKey, path: str, key: str) -> str | None:
        from funcache_ipy.signing import KIND_META, BadSignature

        data = self._download(path)
        if data is None:
            return None
        try:
            stream, _ = public.verify(data, KIND_META, key)
            return bytes(stream).decode()
        except (BadSignature, UnicodeDecodeError):
            return None

    def _download(self, path: str) -> bytearray | None:
        """The object's bytes in writable memory (arrays loaded from it stay writable)."""
        try:
            data = self._fs.cat_file(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # NB. each backend raises its own kinds; none may escape
            self._failed("read", exc)
            return None
        return data if isinstance(data, bytearray) else bytearray(data)

    def _download_hashing(self, path: str) -> tuple[bytearray, PayloadDigest] | None:
        """The object's bytes in writable memory, and its payload hash taken as they came.

        A small object is one read; a large one is read by ranges in parallel straight into
        one buffer, and this thread hashes each chunk as soon as it is there.
        """
        from funcache_ipy.signing import PayloadDigest

        try:
            try:
                first = self._fs.cat_file(path, start=0, end=_CHUNK)
            except FileNotFoundError:
                raise
            except Exception:  # NB. S3 refuses a range of an empty object: read it whole
                first = self._fs.cat_file(path)
            size = len(first) if len(first) < _CHUNK else self._fs.size(path)
        except FileNotFoundError:
            return None
        except Exception as exc:  # NB. as in _download
            self._failed("read", exc)
            return None
        # NB. the size comes from the store, never from the unverified header
        data = bytearray(size) if size > len(first) else bytearray(first)
        digest = PayloadDigest(data)
        if size > len(first):
            data[: len(first)] = first
            if not self._read_chunks(path, data, len(first), digest):
                return None
        digest.arrived(size)
        return data, digest

    def _read_chunks(self, path: str, data: bytearray, start: int, digest: PayloadDigest) -> bool:
        """Fill ``data[start:]`` by ranged reads, hashing each chunk as it completes."""
        from concurrent.futures import ThreadPoolExecutor

        def read(begin: int) -> int:
            end = min(begin + _CHUNK, len(data))
            chunk = self._fs.cat_file(path, start=begin, end=end)
            if len(chunk) != end - begin:
                raise _Changed(path)  # rewritten or cut while read: it will not verify
            data[begin:end] = chunk
            return end

        digest.arrived(start)
        with ThreadPoolExecutor(_PARALLEL, thread_name_prefix="funcache_ipy download") as pool:
            reads = [pool.submit(read, begin) for begin in range(start, len(data), _CHUNK)]
            try:
                for done in reads:
                    digest.arrived(done.result())
            except (FileNotFoundError, _Changed):
                return False
            except Exception as exc:  # NB. as in _download
                self._failed("read", exc)
                return False
            finally:
                for pending in reads:
                    pending.cancel()
        return True

    def _metadata_paths(self, signer_id: str) -> list[str]:
        folder = f"{self._root}/{signer_id}"
        try:
            # NB. s3fs and gcsfs keep listings for the life of the filesystem object: a
            # teammate's new entries (or an expired one) would not be seen this session.
            self._fs.invalidate_cache(folder)
            names = self._fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        except Exception as exc:  # NB. as in _download
            self._failed("read", exc)
            return []
        return [str(name) for name in names if str(name).endswith(_META_SUFFIX)]

    # -- writing

    def put(
        self, key: str, stream: bytes | memoryview, buffers: list[memoryview], tag: str
    ) -> None:
        """Sign and upload ``key``'s value and metadata (in the background unless waiting).

        Signed at once (a copy), so the caller may change the value while it uploads.
        """
        from funcache_ipy.signing import KIND_META, KIND_VALUE

        if self._off or self._read_only:
            return
        encoded = tag.encode()
        value = self.signer.sign(KIND_VALUE, key, stream, [memoryview(encoded), *buffers])
        meta = bytes(self.signer.sign(KIND_META, key, encoded, []))
        if self._wait:
            self._upload(key, value, meta)
            return
        with self._idle:
            self._pending += 1
        self._queue.put((key, value, meta))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._upload_forever, name="funcache_ipy upload", daemon=True
            )
            self._thread.start()
            atexit.register(self._flush_at_exit)

    def flush(self, timeout: float | None = None) -> int:
        """Wait until pending uploads are done (at most ``timeout`` s); return how many are left."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0, timeout)
            return self._pending

    def clear(self, name: str | None = None) -> int:
        """Delete this user's own entries (all, or of function/cell ``name``); return how many.

        Never touches other signers' folders: they are theirs, and the bucket's lifecycle
        rules expire them.
        """
        import json

        self.flush()
        own = self.signer.public
        removed = 0
        for path in self._metadata_paths(own.id):
            key = path.rpartition("/")[2][: -len(_META_SUFFIX)]
            if name is not None:
                tag = self._read_meta(own, path, key)
                if tag is None or json.loads(tag).get("name") != name:
                    continue
            try:
                self._fs.rm([self._path(own.id, key), path])
            except FileNotFoundError:
                pass
            except Exception as exc:  # NB. as in _download
                self._failed("write", exc)
                break
            removed += 1
        return removed

    def _upload_forever(self) -> None:
        while True:
            key, value, meta = self._queue.get()
            try:
                self._upload(key, value, meta)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _upload(self, key: str, value: bytearray, meta: bytes) -> None:
        """Write the value, then its metadata: a listed entry always has its value."""
        if self._off or self._read_only:
            return
        own = self.signer.public.id
        try:
            if self._atomic_rename and own not in self._made:
                self._fs.makedirs(f"{self._root}/{own}", exist_ok=True)
                self._made.add(own)
            self._write(self._path(own, key), value)
            self._write(self._path(own, key) + _META_SUFFIX, meta)
        except Exception as exc:  # NB. as in _download: an upload never costs a result
            self._failed("write", exc)

    def _write(self, path: str, data: bytes | bytearray) -> None:
        """Write one object; on a shared folder via a temporary name, so readers never see
        half of it (they would only miss, but a cheap rename avoids even that)."""
        if not self._atomic_rename:
            self._fs.pipe_file(path, data)
            return
        temporary = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
        self._fs.pipe_file(temporary, data)
        self._fs.mv(temporary, path)

    def _flush_at_exit(self) -> None:
        left = self.flush(EXIT_WAIT)
        if left:
            self._warn(
                f"{left} result(s) were not uploaded to {self.url} before exit (still "
                f"uploading after {EXIT_WAIT:.0f} s); they stay in the local cache only"
            )

    def _failed(self, action: str, exc: Exception) -> None:
        """Degrade after a failure: reads off, or uploads off; warn once for each."""
        if action == "write" and isinstance(exc, PermissionError):
            self._read_only = True
            self._report(
                "read-only",
                f"cannot upload to the shared cache {self.url} ({_reason(exc)}): it is "
                "read-only for you, so results are kept locally and not shared",
            )
            return
        self._off = True
        self._report(
            "off",
            f"cannot {action} the shared cache {self.url} ({_reason(exc)}); using the "
            "local cache only for the rest of this session (check the URL and credentials)",
        )

    def _report(self, what: str, message: str) -> None:
        if what not in self._reported:
            self._reported.add(what)
            self._warn(message)

    def _path(self, signer_id: str, key: str) -> str:
        return f"{self._root}/{signer_id}/{key}"


class _Changed(Exception):
    """An object changed size while it was read by ranges (a quiet miss, like tampering)."""


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


_tiers: dict[tuple[str | RemoteSpec, str], RemoteTier | None] = {}
_tiers_lock = threading.Lock()


def tier_for(remote: str | RemoteSpec, warn: Warn) -> RemoteTier | None:
    """The process's tier for ``remote`` and the current ``$FUNCACHE_IPY_TRUST``.

    A remote that cannot be set up (a missing package, a malformed trusted key) is
    reported once, through ``warn``, and the cache stays local (None).
    """
    trust = environ(TRUST_ENV) or ""  # NB. read on every call of a shared function
    if _forked:
        # NB. A forked process (a ProcessPoolExecutor or multiprocessing worker) may end
        # in os._exit, which skips atexit: a background upload would be lost.
        remote = remote if isinstance(remote, RemoteSpec) else RemoteSpec(remote)
        remote = remote._replace(wait=True)
    cached = (remote, trust)
    if cached in _tiers:
        return _tiers[cached]
    with _tiers_lock:
        if cached not in _tiers:
            spec = remote if isinstance(remote, RemoteSpec) else RemoteSpec(remote)
            listed = tuple(text.strip() for text in trust.split(",") if text.strip())
            spec = spec._replace(trust=spec.trust + listed)
            tier: RemoteTier | None = None
            try:
                tier = RemoteTier(spec, warn)
            except (ImportError, ValueError, OSError) as exc:
                warn(f"cannot use the shared cache {spec.url}: {exc}; caching locally only")
            _tiers[cached] = tier
        return _tiers[cached]


_forked = False  # this process was forked from one that imported this module


def _forget_tiers() -> None:
    """In a forked child: the parent's upload threads do not exist here; and its own
    uploads must be done before it returns (see tier_for)."""
    global _forked
    _forked = True
    _tiers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_tiers)
