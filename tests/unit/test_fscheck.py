"""T12: network and cross-VM filesystems are refused (reference/reliability.md §1.6, §7).

The mount tables are synthetic ``/proc/self/mountinfo`` texts, so these tests describe NFS,
SMB and virtiofs machines without needing one.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

from localq.errors import ConfigError
from localq.fscheck import NETWORK_FS_TYPES, check_local_filesystem, filesystem_type

#: Where a queue file may live (PostgreSQL has no filesystem checks: README).
pytestmark = pytest.mark.sqlite_only


def _line(mount_id: int, mount_point: str, fs_type: str, optional: str = "shared:1") -> str:
    """Return one mountinfo line; *mount_point* must already be escaped like the kernel's."""
    fields = [str(mount_id), "1", "0:42", "/", mount_point, "rw,relatime"]
    fields += optional.split()  # zero or more optional fields before the " - " separator
    fields += ["-", fs_type, f"src{mount_id}", "rw"]
    return " ".join(fields)


def _table(*mounts: tuple[str, str]) -> str:
    """Return a mount table with an ext4 root and then *mounts* as ``(point, type)`` pairs."""
    lines = [_line(1, "/", "ext4")]
    lines += [_line(i, point, fs_type) for i, (point, fs_type) in enumerate(mounts, start=2)]
    return "\n".join(lines) + "\n"


REFUSED = ["nfs", "nfs4", "cifs", "smb3", "fuse.sshfs", "9p", "virtiofs"]
ACCEPTED = ["overlay", "tmpfs", "ext4", "btrfs", "xfs"]


@pytest.mark.parametrize("fs_type", REFUSED)
def test_network_and_cross_vm_filesystems_are_refused_with_an_actionable_message(
    fs_type: str,
) -> None:
    table = _table(("/srv/queue", fs_type))

    assert filesystem_type("/srv/queue/q.db", table) == fs_type
    with pytest.raises(ConfigError) as caught:
        check_local_filesystem("/srv/queue/q.db", mountinfo=table)
    message = str(caught.value)
    assert "/srv/queue/q.db" in message
    assert repr(fs_type) in message
    assert "WAL" in message and "shared" in message
    assert 'settings={"allow_network_fs": True}' in message


@pytest.mark.parametrize("fs_type", ACCEPTED)
def test_local_filesystems_are_accepted_silently(fs_type: str) -> None:
    table = _table(("/srv/queue", fs_type))

    assert filesystem_type("/srv/queue/q.db", table) == fs_type
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_local_filesystem("/srv/queue/q.db", mountinfo=table)


def test_the_refused_list_covers_the_documented_types() -> None:
    assert set(REFUSED) <= NETWORK_FS_TYPES
    assert not set(ACCEPTED) & NETWORK_FS_TYPES
    # Generic FUSE is also ntfs-3g and exfat-fuse on local disks: never refused by type alone.
    assert not {"fuse", "fuseblk"} & NETWORK_FS_TYPES


@pytest.mark.parametrize("reverse", [False, True], ids=["parent-first", "child-first"])
def test_a_local_mount_nested_in_nfs_is_local_and_the_rest_of_nfs_is_not(reverse: bool) -> None:
    mounts = [("/srv/nfs", "nfs"), ("/srv/nfs/scratch", "ext4")]
    table = _table(*(reversed(mounts) if reverse else mounts))

    assert filesystem_type("/srv/nfs/scratch/q.db", table) == "ext4"
    check_local_filesystem("/srv/nfs/scratch/q.db", mountinfo=table)
    assert filesystem_type("/srv/nfs/q.db", table) == "nfs"
    with pytest.raises(ConfigError):
        check_local_filesystem("/srv/nfs/q.db", mountinfo=table)


@pytest.mark.parametrize("reverse", [False, True], ids=["parent-first", "child-first"])
def test_an_nfs_mount_nested_in_a_local_one_is_refused_only_below_it(reverse: bool) -> None:
    mounts = [("/data", "xfs"), ("/data/shared", "nfs4")]
    table = _table(*(reversed(mounts) if reverse else mounts))

    assert filesystem_type("/data/q.db", table) == "xfs"
    assert filesystem_type("/data/shared/deep/q.db", table) == "nfs4"
    with pytest.raises(ConfigError):
        check_local_filesystem("/data/shared/deep/q.db", mountinfo=table)


def test_a_mount_point_matches_whole_path_components_only() -> None:
    table = _table(("/mnt/nfs", "nfs"))

    assert filesystem_type("/mnt/nfsdata/q.db", table) == "ext4"
    assert filesystem_type("/mnt/nfs", table) == "nfs"


def test_escaped_spaces_tabs_and_backslashes_in_mount_points_are_decoded() -> None:
    table = _table(("/mnt/my\\040share", "cifs"), ("/mnt/odd\\011tab\\134slash", "9p"))

    assert filesystem_type("/mnt/my share/q.db", table) == "cifs"
    assert filesystem_type("/mnt/odd\ttab\\slash/q.db", table) == "9p"
    # The escaped spelling is not a real directory name.
    assert filesystem_type("/mnt/my\\040share/q.db", table) == "ext4"


def test_the_mount_on_top_wins_when_two_share_a_mount_point() -> None:
    # An NFS share later covered by a tmpfs: mountinfo lists the covering mount last.
    table = _table(("/var/q", "nfs"), ("/var/q", "tmpfs"))

    assert filesystem_type("/var/q/q.db", table) == "tmpfs"


@pytest.mark.parametrize("optional", ["", "shared:7 master:3 propagate_from:2 unbindable"])
def test_any_number_of_optional_fields_before_the_separator(optional: str) -> None:
    table = "\n".join([_line(1, "/", "ext4", optional), _line(2, "/nas", "nfs", optional)])

    assert filesystem_type("/nas/q.db", table) == "nfs"


def test_a_file_bind_mounted_from_the_host_is_seen_through_its_own_mount() -> None:
    # docker run -v ./q.db:/app/q.db on Docker Desktop: the file is on virtiofs, its
    # directory on the container's overlay.
    table = _table(("/app", "overlay"), ("/app/q.db", "virtiofs"))

    assert filesystem_type("/app/q.db", table) == "virtiofs"
    with pytest.raises(ConfigError, match="virtiofs"):
        check_local_filesystem("/app/q.db", mountinfo=table)


def test_symlinks_are_resolved_to_where_the_sidecar_files_go(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    table = _table((str(real.resolve()), "nfs"))

    assert filesystem_type(str(tmp_path / "link" / "q.db"), table) == "nfs"
    with pytest.raises(ConfigError):
        check_local_filesystem(str(tmp_path / "link" / "q.db"), mountinfo=table)


def test_a_relative_path_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    table = _table((str(tmp_path.resolve()), "smb3"))

    assert filesystem_type("q.db", table) == "smb3"


def test_the_override_warns_instead_of_raising() -> None:
    table = _table(("/srv/queue", "nfs4"))

    with pytest.warns(RuntimeWarning, match="allow_network_fs") as record:
        check_local_filesystem("/srv/queue/q.db", allow_network_fs=True, mountinfo=table)
    assert len(record) == 1
    assert "nfs4" in str(record[0].message)


@pytest.mark.parametrize("text", ["", "garbage\n", "1 2 3\n"])
def test_an_unusable_mount_table_means_unknown_and_is_not_refused(text: str) -> None:
    assert filesystem_type("/srv/q.db", text) is None
    check_local_filesystem("/srv/q.db", mountinfo=text)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("\\\\server\\share\\q.db", "smb"),
        ("//server/share/q.db", "smb"),
        ("\\\\?\\UNC\\server\\share\\q.db", "smb"),
        ("\\\\?\\C:\\queues\\q.db", None),
        ("\\\\.\\C:\\queues\\q.db", None),
        ("C:\\queues\\q.db", None),
        ("q.db", None),
    ],
)
def test_on_windows_a_unc_path_is_smb_and_anything_else_unknown(
    path: str, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")

    assert filesystem_type(path) == expected
    if expected is None:
        check_local_filesystem(path)
    else:
        with pytest.raises(ConfigError, match="smb"):
            check_local_filesystem(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/mountinfo")
def test_this_machines_temporary_directory_has_a_type_and_is_accepted(tmp_path: Path) -> None:
    fs_type = filesystem_type(str(tmp_path / "q.db"))

    assert isinstance(fs_type, str) and fs_type
    check_local_filesystem(str(tmp_path / "q.db"))
