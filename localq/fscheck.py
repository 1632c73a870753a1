"""Refuse network and cross-VM filesystems, where SQLite's WAL mode corrupts databases.

WAL keeps its index (the ``-shm`` file) in memory shared through ``mmap``; that is only
coherent when every process using the database runs on one host and sees one page cache
(https://sqlite.org/wal.html: "WAL does not work over a network filesystem"). NFS and SMB
add broken ``fcntl`` locks (https://sqlite.org/faq.html#q5), and the host/VM bridges of
Docker Desktop, OrbStack and Podman (virtiofs, 9p) have produced zero-filled pages under
concurrent writers (openclaw/openclaw#120549, NousResearch/hermes-agent#110848).

Only Linux can tell the filesystem type without extra dependencies (``/proc/self/mountinfo``);
on Windows a UNC path is recognised as SMB; elsewhere the type is unknown and nothing is
refused.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from typing import NamedTuple

from .errors import ConfigError

__all__ = ["NETWORK_FS_TYPES", "check_local_filesystem", "filesystem_type"]

NETWORK_FS_TYPES: frozenset[str] = frozenset(
    {
        # Kernel network clients: the -shm mmap is not shared between client hosts and
        # byte-range locks are emulated (or lost) by the server.
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "smb2",
        "smb",  # what filesystem_type() reports for a Windows UNC path
        "ncpfs",
        "afs",
        # CephFS (kernel "ceph", FUSE "fuse.ceph-fuse") and GlusterFS are cluster filesystems:
        # fcntl locks are cluster-wide, but mmap is coherent per client only, so two hosts
        # sharing one queue break the WAL index exactly as NFS does. Refused like NFS; a
        # single-host user can take the documented override.
        "ceph",
        "fuse.ceph-fuse",
        "glusterfs",
        "fuse.glusterfs",
        # FUSE clients of remote storage. sshfs has no locking at all; the object-store
        # bridges (gcsfuse, s3fs, rclone) document no POSIX locks and no coherent shared
        # mmap, and rewrite whole objects on close. Generic "fuse"/"fuseblk" stay unlisted:
        # they are also local drivers (ntfs-3g, exfat-fuse).
        "fuse.sshfs",
        "sshfs",
        "fuse.gcsfuse",
        "fuse.s3fs",
        "fuse.rclone",
        # Cross-VM bridges: host bind mounts in Docker Desktop / OrbStack / Podman machine
        # (virtiofs, 9p), WSL2's /mnt/c (9p), and hypervisor shared folders (VirtualBox
        # vboxsf, VMware hgfs, Parallels prl_fs). The guest's page cache is not the host's.
        "virtiofs",
        "fuse.virtiofs",
        "9p",
        "vboxsf",
        "vmhgfs",
        "fuse.vmhgfs-fuse",
        "prl_fs",
    }
)

_MOUNTINFO = "/proc/self/mountinfo"
# The kernel escapes space, tab, newline and backslash in mountinfo paths as \ooo.
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class _Mount(NamedTuple):
    mount_point: str
    fs_type: str


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _parse_mountinfo(text: str) -> list[_Mount]:
    """Return the mounts listed in *text*, in file order (later lines are mounted on top).

    A line is ``id parent major:minor root mount_point options [optional...] - type source
    superoptions``; the optional fields vary in number, hence the search for ``-``.
    """
    mounts: list[_Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
        except ValueError:
            continue  # not a mountinfo line: skip rather than guess
        if separator + 1 >= len(fields):
            continue
        mounts.append(_Mount(_unescape(fields[4]), fields[separator + 1]))
    return mounts


def _is_under(path: str, mount_point: str) -> bool:
    # Component-wise, so that /mnt/nfs does not claim /mnt/nfsdata.
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def _mount_of(path: str, mounts: list[_Mount]) -> _Mount | None:
    """Return the mount holding *path*: the longest matching mount point, the last one on ties.

    Ties happen when something is mounted over an existing mount point; mountinfo lists the
    mount on top after the one it hides.
    """
    best: _Mount | None = None
    for mount in mounts:
        if _is_under(path, mount.mount_point) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def _unc_type(path: str) -> str | None:
    r"""Return ``"smb"`` for a Windows UNC path (``\\server\share``), else ``None``.

    ``\\?\C:\...`` and ``\\.\...`` are local device paths, except ``\\?\UNC\server\share``.
    Pure string logic, so that it can be tested on any platform.
    """
    normalised = path.replace("/", "\\")
    if normalised[:8].upper() == "\\\\?\\UNC\\":
        return "smb"
    if normalised.startswith(("\\\\?\\", "\\\\.\\")):
        return None
    if normalised.startswith("\\\\") and len(normalised) > 2 and normalised[2] != "\\":
        return "smb"
    return None


def _resolve(path: str) -> str:
    # SQLite follows a symlinked database name and puts -wal/-shm next to the target, so
    # the target's filesystem is the one that matters. realpath() also works on a file
    # that does not exist yet (a queue about to be created).
    return os.path.realpath(os.path.abspath(path))


def _read_mountinfo() -> str | None:
    try:
        # Mount points are bytes; surrogateescape round-trips them like os.fsdecode().
        with open(_MOUNTINFO, encoding=sys.getfilesystemencoding(), errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None  # not Linux, or /proc is not mounted (some chroots and sandboxes)


def _find_mount(path: str, mountinfo: str | None) -> _Mount | None:
    if mountinfo is None:
        mountinfo = _read_mountinfo()
        if mountinfo is None:
            return None
    return _mount_of(_resolve(path), _parse_mountinfo(mountinfo))


def filesystem_type(path: str, mountinfo: str | None = None) -> str | None:
    """Return the type of the filesystem that holds *path* (``"ext4"``, ``"nfs4"``, ...).

    On Linux this is the type of the mount with the longest mount point that is a prefix of
    the resolved path; for a file that does not exist yet, that is its directory's mount.
    A file bind-mounted on its own (``docker run -v ./q.db:/app/q.db``) is matched too.

    :param path: a database path; it need not exist.
    :param mountinfo: the text of ``/proc/self/mountinfo`` to use instead of the real one
        (tests, or a caller that caches it).
    :returns: the type, ``"smb"`` for a UNC path on Windows, or ``None`` where it is unknown
        (macOS, Windows drive letters, an unreadable or unmatched mount table).
    """
    if sys.platform == "win32":
        return _unc_type(path)
    mount = _find_mount(path, mountinfo)
    return None if mount is None else mount.fs_type


def check_local_filesystem(
    path: str, *, allow_network_fs: bool = False, mountinfo: str | None = None
) -> None:
    """Refuse a database on a network or cross-VM filesystem (:data:`NETWORK_FS_TYPES`).

    Both the database file and its directory are checked: ``-wal`` and ``-shm`` are created
    in the directory, which differs from the file's own filesystem for a bind-mounted file.

    :param path: the database path; it need not exist.
    :param allow_network_fs: warn with a :class:`RuntimeWarning` instead of raising.
    :param mountinfo: see :func:`filesystem_type`.
    :raises ConfigError: when the filesystem is a network or cross-VM one and
        *allow_network_fs* is false.
    """
    # The path as given first: on Windows a UNC name is recognised before any resolution.
    for where in (path, os.path.dirname(_resolve(path))):
        fs_type = filesystem_type(where, mountinfo)
        if fs_type in NETWORK_FS_TYPES:
            break
    else:
        return
    message = (
        f"{path!r} is on a {fs_type!r} filesystem ({where!r}), a network or cross-VM "
        "filesystem. localq uses SQLite's WAL mode, whose index lives in memory shared by "
        "every process on one host; over NFS, SMB, sshfs, 9p or virtiofs that sharing and "
        "the file locks break, and corrupted databases have been reported "
        "(https://sqlite.org/wal.html). Put the database on a local disk (for Docker, a "
        "named volume rather than a host bind mount), or accept the risk with "
        'settings={"allow_network_fs": True}.'
    )
    if not allow_network_fs:
        raise ConfigError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=2)
