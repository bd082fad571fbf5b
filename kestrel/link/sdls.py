"""Space Data Link Security, CCSDS 355.0-B-2, for TC frames: AES-256-GCM, as YAMCS lays it out.

A protected frame's data field (after the segment header, if any) is

    security header: SPI (2 octets) + IV (12 octets, the sequence number)
    the frame data: ciphertext (authenticated encryption) or clear (authentication only)
    security trailer: the MAC (16 octets)

and the FECF follows. The additional authenticated data is YAMCS's: the
primary header ANDed with 00 00 FC 00 00 (only the VCID is authenticated:
bypass, control command, SCID, length and N(S) are not), the segment header
when present, the SPI, then 12 zero octets (the IV enters GCM as its nonce).
In authentication-only mode the clear data is appended to the AAD and GCM
runs over no plaintext: the tag covers it all.

A security association is bound to one (VCID, SPI). Checks on receipt, in
order, before any decryption: the SPI is known, it belongs to this frame's
virtual channel, the SA is operational, the sequence number is beyond the
high-water mark and within the replay window. Then the tag. Only a frame
whose tag verifies moves the high-water mark, and it is persisted (temporary
file, fsync, rename, fsync of the directory) before the frame goes on, so a
reboot never reopens a sequence number. An SA whose counter file is missing,
truncated or corrupt is not operational until the ground provisions it.

Keys come from files only: 32 octets (raw, or 64 hex digits), owned by this
user, readable by no one else (group or world permission bits refused).
"""
from __future__ import annotations

import enum
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import FrameRejected, Rejection

SPI_LENGTH: Final = 2
IV_LENGTH: Final = 12
MAC_LENGTH: Final = 16
HEADER_LENGTH: Final = SPI_LENGTH + IV_LENGTH
OVERHEAD: Final = HEADER_LENGTH + MAC_LENGTH
KEY_LENGTH: Final = 32
MAX_SEQUENCE: Final = (1 << (8 * IV_LENGTH)) - 1
# 355.0-B-2: SPI 0 and 0xFFFF are reserved.
MIN_SPI: Final = 1
MAX_SPI: Final = 0xFFFE
PRIMARY_HEADER_MASK: Final = bytes.fromhex("0000FC0000")
# The counter file: magic, SPI, sequence number, CRC-32 of what precedes it.
_COUNTER = struct.Struct(">4sH12sI")
_COUNTER_MAGIC: Final = b"KSA1"


class Mode(str, enum.Enum):
    AUTHENTICATED_ENCRYPTION = "authenticated_encryption"
    AUTHENTICATION = "authentication"


class KeyFileError(ValueError):
    """A key file that cannot be used (permissions, owner, length, format)."""


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves the old file or the new one, never a torn one, and
    the rename itself is on disk (the directory synced) before this returns. Owner-only permissions."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def load_key(path) -> bytes:
    """The 32-octet key in `path`, refused unless it is a regular file of ours that no one else can read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise KeyFileError(f"key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise KeyFileError(f"key file {path} has mode {stat.S_IMODE(info.st_mode):04o}: group or others may "
                            "access it; chmod 600 it")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise KeyFileError(f"key file {path} belongs to uid {info.st_uid}, not to this program's {os.getuid()}")
        raw = os.read(fd, 200)
    finally:
        os.close(fd)
    if len(raw) == KEY_LENGTH:
        return raw
    text = raw.strip()
    if len(text) == 2 * KEY_LENGTH:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise KeyFileError(f"key file {path} must hold {KEY_LENGTH} octets (raw, or {2 * KEY_LENGTH} hex digits)")


# --- the counter file --------------------------------------------------------------------------------

class CounterError(ValueError):
    """A counter file that is missing, truncated or corrupt."""


def counter_path(directory, spi: int) -> Path:
    return Path(directory) / f"sa-{spi}.seq"


def read_counter(directory, spi: int) -> int:
    path = counter_path(directory, spi)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CounterError(f"{path} is missing") from None
    except OSError as exc:
        raise CounterError(f"{path}: {exc.strerror}") from None
    if len(raw) != _COUNTER.size:
        raise CounterError(f"{path} holds {len(raw)} octets, a counter is {_COUNTER.size}")
    magic, stored_spi, sequence, crc = _COUNTER.unpack(raw)
    if magic != _COUNTER_MAGIC or zlib.crc32(raw[:-4]) != crc:
        raise CounterError(f"{path} is corrupt (magic or CRC-32)")
    if stored_spi != spi:
        raise CounterError(f"{path} is the counter of SPI {stored_spi}, not {spi}")
    return int.from_bytes(sequence, "big")


def write_counter(directory, spi: int, sequence: int) -> None:
    """Atomically: a reader (or a reboot) finds the old counter or the new one, never a torn one."""
    path = counter_path(directory, spi)
    body = _COUNTER_MAGIC + spi.to_bytes(2, "big") + sequence.to_bytes(IV_LENGTH, "big")
    raw = body + zlib.crc32(body).to_bytes(4, "big")
    write_atomically(path, raw)


# --- security associations ---------------------------------------------------------------------------

def authenticated_data(primary_header: bytes, segment_header: bytes, spi: int) -> bytes:
    masked = bytes(a & m for a, m in zip(primary_header, PRIMARY_HEADER_MASK))
    return masked + segment_header + spi.to_bytes(SPI_LENGTH, "big") + bytes(IV_LENGTH)


class SecurityAssociation:
    """One SA: its key, its mode, its virtual channel and its sequence numbers.

    Receiving (flight): `counter_dir` holds the high-water mark; without a valid one the SA is not
    operational (`problem` says why). Sending (ground): `next_sequence()` gives fresh IVs, kept in
    `counter_dir` the same way, so a restarted ground never reuses one.
    """

    def __init__(self, spi: int, vcid: int, key: bytes | None, mode: Mode = Mode.AUTHENTICATED_ENCRYPTION,
                 counter_dir=None, replay_window: int = 1 << 20, key_problem: str | None = None):
        """`key` None: the SA exists (its SPI is known) but is not operational; `key_problem` says why."""
        if not MIN_SPI <= spi <= MAX_SPI:
            raise ValueError(f"SPI must be {MIN_SPI}..{MAX_SPI}, got {spi}")
        if key is not None and len(key) != KEY_LENGTH:
            raise ValueError(f"an AES-256 key is {KEY_LENGTH} octets, got {len(key)}")
        if replay_window < 1:
            raise ValueError(f"replay window must be at least 1, got {replay_window}")
        self.spi = spi
        self.vcid = vcid
        self.mode = Mode(mode)
        self._aead = AESGCM(bytes(key)) if key is not None else None
        self.counter_dir = counter_dir
        self.replay_window = replay_window
        self.sequence = 0              # the high-water mark: the last sequence number accepted (or sent)
        self.problem: str | None = None if key is not None else (key_problem or "no key")
        if counter_dir is not None and self.problem is None:
            try:
                self.sequence = read_counter(counter_dir, spi)
            except CounterError as exc:
                self.problem = str(exc)

    @property
    def operational(self) -> bool:
        return self.problem is None

    def rekey(self, key: bytes) -> None:
        """A new key (rotation by command); the sequence numbers go on from where they are."""
        if len(key) != KEY_LENGTH:
            raise ValueError(f"an AES-256 key is {KEY_LENGTH} octets, got {len(key)}")
        self._aead = AESGCM(bytes(key))
        if self.problem is not None and self.problem.startswith("key"):
            self.problem = None
            if self.counter_dir is not None:
                try:
                    self.sequence = read_counter(self.counter_dir, self.spi)
                except CounterError as exc:
                    self.problem = str(exc)

    # --- sending (the ground) --------------------------------------------------------------------
    def next_sequence(self) -> int:
        if not self.operational:
            raise ValueError(f"SA {self.spi} is not operational: {self.problem}")
        if self.sequence >= MAX_SEQUENCE:
            raise ValueError(f"SA {self.spi}: sequence numbers exhausted; rotate the key")
        sequence = self.sequence + 1
        if self.counter_dir is not None:
            write_counter(self.counter_dir, self.spi, sequence)    # before the IV is used
        self.sequence = sequence
        return sequence

    def protect(self, primary_header: bytes, segment_header: bytes, data: bytes) -> bytes:
        """The frame data field that replaces `data`: security header, data, MAC."""
        sequence = self.next_sequence()
        iv = sequence.to_bytes(IV_LENGTH, "big")
        aad = authenticated_data(primary_header, segment_header, self.spi)
        if self.mode == Mode.AUTHENTICATED_ENCRYPTION:
            sealed = self._aead.encrypt(iv, bytes(data), aad)
        else:
            sealed = bytes(data) + self._aead.encrypt(iv, b"", aad + bytes(data))
        return self.spi.to_bytes(SPI_LENGTH, "big") + iv + sealed

    # --- receiving (the flight program) ------------------------------------------------------------
    def check_sequence(self, sequence: int) -> None:
        if sequence <= self.sequence:
            raise FrameRejected(Rejection.REPLAY, f"SA {self.spi}: sequence number {sequence} is not beyond "
                                f"{self.sequence}")
        if sequence - self.sequence > self.replay_window:
            raise FrameRejected(Rejection.REPLAY, f"SA {self.spi}: sequence number {sequence} is more than "
                                f"{self.replay_window} beyond {self.sequence}")

    def open(self, primary_header: bytes, segment_header: bytes, field: bytes) -> bytes:
        """The frame's data from a protected data field (whose SPI is this SA's), or FrameRejected."""
        if not self.operational:
            raise FrameRejected(Rejection.SA_NOT_OPERATIONAL, f"SA {self.spi}: {self.problem}")
        iv = bytes(field[SPI_LENGTH:HEADER_LENGTH])
        sequence = int.from_bytes(iv, "big")
        self.check_sequence(sequence)
        aad = authenticated_data(primary_header, segment_header, self.spi)
        sealed = bytes(field[HEADER_LENGTH:])
        try:
            if self.mode == Mode.AUTHENTICATED_ENCRYPTION:
                data = self._aead.decrypt(iv, sealed, aad)
            else:
                data = sealed[:-MAC_LENGTH]
                self._aead.decrypt(iv, sealed[-MAC_LENGTH:], aad + data)
        except InvalidTag:
            raise FrameRejected(Rejection.MAC, f"SA {self.spi}: the MAC does not verify") from None
        if self.counter_dir is not None:
            try:
                write_counter(self.counter_dir, self.spi, sequence)
            except OSError as exc:
                raise FrameRejected(Rejection.COUNTER_STORAGE, f"SA {self.spi}: the counter cannot be kept "
                                    f"({exc}); the frame is refused rather than risk a replay after a reboot"
                                    ) from None
        self.sequence = sequence
        return data


class SecurityAssociations:
    """The SAs of a link, by SPI; which virtual channels they protect."""

    def __init__(self, associations=()):
        self.by_spi: dict[int, SecurityAssociation] = {}
        for sa in associations:
            if sa.spi in self.by_spi:
                raise ValueError(f"SPI {sa.spi} is configured twice")
            self.by_spi[sa.spi] = sa
        self.protected_vcids = frozenset(sa.vcid for sa in self.by_spi.values())

    def __bool__(self) -> bool:
        return bool(self.by_spi)

    def open(self, vcid: int, primary_header: bytes, segment_header: bytes, field: bytes) -> bytes:
        """The clear data of a frame on `vcid`: through its SA when the VC is protected, else as it came."""
        if vcid not in self.protected_vcids:
            return field
        if len(field) < OVERHEAD + 1:
            raise FrameRejected(Rejection.SDLS_TRUNCATED, f"{len(field)} octets cannot hold the security header, "
                                f"data and MAC ({OVERHEAD + 1} at least)")
        spi = int.from_bytes(field[:SPI_LENGTH], "big")
        sa = self.by_spi.get(spi)
        if sa is None:
            raise FrameRejected(Rejection.SPI_UNKNOWN, f"SPI {spi} is not configured"
                                + ("" if MIN_SPI <= spi <= MAX_SPI else " (reserved value)"))
        if sa.vcid != vcid:
            raise FrameRejected(Rejection.SPI_OTHER_VC, f"SPI {spi} protects virtual channel {sa.vcid}, the "
                                f"frame is on {vcid}")
        return sa.open(primary_header, segment_header, field)


def rotated_key_path(key_dir, number: int) -> Path:
    return Path(key_dir) / f"key-{number}"


def active_key_path(counter_dir, spi: int) -> Path:
    """Where the flight program notes the key number an SA was rotated to (absent: its configured key_file)."""
    return Path(counter_dir) / f"sa-{spi}.key"


def note_active_key(counter_dir, spi: int, number: int) -> None:
    """Atomically, as the counter: a restart finds the old key number or the new one."""
    path = active_key_path(counter_dir, spi)
    write_atomically(path, f"{number}\n".encode())


def _key_of(config, uplink, directory) -> bytes:
    """The SA's key: the one it was rotated to (flight, noted in its counter directory), else its key_file."""
    if directory is not None and uplink.key_dir:
        noted = active_key_path(directory, config.spi)
        try:
            number = int(noted.read_text().strip())
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"key choice {noted} unreadable: {exc}") from None
        else:
            return load_key(rotated_key_path(uplink.key_dir, number))
    return load_key(config.key_file)


def associations_from_config(uplink, counter_dir=None) -> tuple[SecurityAssociations, list[str]]:
    """The SAs an UplinkConfig declares, keys loaded; and what is wrong with any of them (an SA whose key
    or counter cannot be read is kept, not operational, so its SPI is still refused by name)."""
    directory = counter_dir if counter_dir is not None else uplink.counter_dir
    associations, problems = [], []
    for config in uplink.security_associations:
        try:
            key, why = _key_of(config, uplink, directory), None
        except KeyFileError as exc:
            key, why = None, str(exc)
        sa = SecurityAssociation(config.spi, config.vcid, key, Mode(config.mode), counter_dir=directory,
                                 replay_window=uplink.replay_window, key_problem=why)
        if sa.problem is not None:
            problems.append(f"SA {config.spi} (virtual channel {config.vcid}) is not operational: {sa.problem}")
        associations.append(sa)
    return SecurityAssociations(associations), problems


def main(argv=None) -> int:
    """`python -m kestrel.link.sdls provision DIR SPI [VALUE]`: the first counter of an SA (flight or ground).

    Refuses to overwrite a counter: lowering the flight's would reopen sequence numbers, lowering the
    ground's would reuse IVs under the same key."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kestrel.link.sdls",
                                     description="Provision the sequence counter of an SDLS security association.")
    sub = parser.add_subparsers(dest="action", required=True)
    provision = sub.add_parser("provision", help="write the first counter of an SA (refused if one exists)")
    provision.add_argument("directory")
    provision.add_argument("spi", type=int)
    provision.add_argument("value", type=int, nargs="?", default=0)
    args = parser.parse_args(argv)
    if not MIN_SPI <= args.spi <= MAX_SPI or not 0 <= args.value <= MAX_SEQUENCE:
        parser.error(f"SPI must be {MIN_SPI}..{MAX_SPI} and the value 0..2^96-1")
    path = counter_path(args.directory, args.spi)
    if path.exists():
        parser.error(f"{path} exists: a counter is never lowered or reset here")
    Path(args.directory).mkdir(parents=True, exist_ok=True, mode=0o700)
    write_counter(args.directory, args.spi, args.value)
    print(f"{path}: SA {args.spi} starts after sequence number {args.value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
