"""The kernel layers that lock a worker down: rlimits, namespaces, Landlock, seccomp.

:func:`probe` says what this kernel offers without changing anything;
:func:`confine` applies every layer to the calling process, which must still
be single-threaded (Landlock and seccomp bind the calling thread only).

Two small ctypes bindings live here, and why:

* Landlock: the PyPI ``landlock`` package handles file rights only (its
  ruleset has no ``handled_access_net`` and no ``scoped``), so it cannot deny
  TCP or scope signals and abstract sockets.  The three system calls take a
  struct each; we probe the ABI and pass the struct size that ABI knows.
* seccomp: the filter is built by the system's ``libseccomp`` (Debian
  ``libseccomp2``, which apt itself depends on: present on every Debian),
  called through ctypes.  ``pyseccomp`` is the same kind of ctypes shim, last
  released in 2021 and untyped; Debian's ``python3-seccomp`` is compiled for
  the system interpreter only and cannot be imported from a virtualenv.  We
  use five functions of libseccomp's stable ABI; it resolves syscall names for
  the running architecture and writes the BPF, including the architecture check.

Linux only.  Elsewhere :func:`probe` reports every layer missing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from captp.confine._errors import LayerUnavailable

__all__ = ["LAYERS", "Layer", "confine", "landlock_abi", "probe"]

LAYERS: Final = ("rlimits", "namespaces", "no_new_privs", "landlock", "seccomp")
"""Every layer a strict compartment needs, in the order they are applied."""

# Landlock ABI 6 (Linux 6.12) is the first that scopes signals and abstract
# Unix sockets; without it a guest running as the host's uid could signal it.
STRICT_LANDLOCK_ABI: Final = 6

# The uid and gid a worker started by root runs as ("nobody").
NOBODY: Final = 65534

_SYS_LANDLOCK_CREATE_RULESET: Final = 444  # the same on every architecture
_SYS_LANDLOCK_ADD_RULE: Final = 445
_SYS_LANDLOCK_RESTRICT_SELF: Final = 446
_LANDLOCK_CREATE_RULESET_VERSION: Final = 1 << 0
_LANDLOCK_RULE_PATH_BENEATH: Final = 1

# Filesystem rights by the ABI that introduced them.
_FS_ABI1: Final = (1 << 13) - 1  # execute .. make_sym
_FS_REFER: Final = 1 << 13  # ABI 2
_FS_TRUNCATE: Final = 1 << 14  # ABI 3
_FS_IOCTL_DEV: Final = 1 << 15  # ABI 5
_FS_READ_FILE: Final = 1 << 2
_FS_READ_DIR: Final = 1 << 3
_NET_BIND_TCP: Final = 1 << 0  # ABI 4
_NET_CONNECT_TCP: Final = 1 << 1
_SCOPE_ABSTRACT_UNIX: Final = 1 << 0  # ABI 6
_SCOPE_SIGNAL: Final = 1 << 1

_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_SET_PDEATHSIG: Final = 1
_CLONE_NEWUSER: Final = 0x10000000
_CLONE_NEWNET: Final = 0x40000000
_CLONE_THREAD: Final = 0x00010000

# System calls a guest never needs, answered with EPERM: new sockets and
# connections, running programs, new processes, debugging other processes,
# namespaces and mounts, kernel attack surface (bpf, io_uring, perf,
# userfaultfd, keyrings, modules), identity changes, device nodes.
# Names unknown on this architecture are skipped.
DENIED_SYSCALLS: Final = (
    "socket", "connect", "bind", "listen", "accept", "accept4",
    "execve", "execveat", "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "pidfd_open",
    "pidfd_send_signal", "kcmp", "process_madvise", "tkill",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "add_key", "request_key", "keyctl",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "mknod", "mknodat", "reboot", "swapon", "swapoff", "acct",
    "quotactl", "name_to_handle_at", "open_by_handle_at", "iopl", "ioperm", "personality",
    "syslog", "vhangup", "settimeofday", "clock_settime", "adjtimex", "clock_adjtime",
    "sethostname", "setdomainname", "uselib", "lookup_dcookie", "fanotify_init",
)


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer as probed or applied: ``ok`` and a short ``detail`` (why not, or what)."""

    name: str
    ok: bool
    detail: str


_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def landlock_abi() -> int:
    """The Landlock ABI version of this kernel (0: Landlock is absent or disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _c().syscall(
        _SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION),
    )
    return max(int(version), 0)


# -- seccomp through libseccomp ----------------------------------------------------


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


_SCMP_ACT_ALLOW: Final = 0x7FFF0000
_SCMP_CMP_NE: Final = 1
_SCMP_CMP_MASKED_EQ: Final = 7

_seccomp_lib: Any = None
_seccomp_error: str | None = None


def _scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def load_libseccomp() -> Any:
    """The system's libseccomp (loaded once; must happen before Landlock denies files)."""
    global _seccomp_lib, _seccomp_error
    if _seccomp_lib is not None or _seccomp_error is not None:
        return _seccomp_lib
    try:  # the soname of libseccomp's stable ABI; searching (ctypes.util) costs a cold start ms
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        try:
            lib = ctypes.CDLL(find_library("seccomp") or "libseccomp.so", use_errno=True)
        except OSError as exc:
            _seccomp_error = f"libseccomp not found ({exc}); install Debian's libseccomp2"
            return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_load.restype = ctypes.c_int
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    _seccomp_lib = lib
    return lib


def _seccomp_probe() -> Layer:
    if not sys.platform.startswith("linux"):
        return Layer("seccomp", False, "not Linux")
    if load_libseccomp() is None:
        return Layer("seccomp", False, _seccomp_error or "libseccomp not found")
    try:
        with open("/proc/self/status") as status:
            if not any(line.startswith("Seccomp_filters:") for line in status):
                return Layer("seccomp", False, "kernel built without CONFIG_SECCOMP_FILTER")
    except OSError as exc:
        return Layer("seccomp", False, f"cannot read /proc/self/status: {exc}")
    return Layer("seccomp", True, "libseccomp filter")


def _rule(lib: Any, ctx: int, action: int, name: str, *cmps: _ArgCmp) -> bool:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        return False  # no such system call on this architecture
    array = (_ArgCmp * max(len(cmps), 1))(*cmps)
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
    if rc < 0:
        raise OSError(-rc, f"seccomp_rule_add({name}): {os.strerror(-rc)}")
    return True


# The zygote compiles the filter once, with this stand-in for the worker's pid
# (its signal rules name the pid), and each forked worker patches in its own:
# libseccomp takes ~1.4 ms to build the program, loading it takes microseconds.
_PID_PLACEHOLDER: Final = 0x7ABCDEF1
_precompiled: tuple[int, bytes] | None = None
_PR_SET_SECCOMP: Final = 22
_SECCOMP_MODE_FILTER: Final = 2


def _build_seccomp(pid: int, export: bool) -> tuple[int, bytes]:
    """Build the filter for ``pid``; load it, or (``export``) return its BPF program."""
    lib = load_libseccomp()
    if lib is None:
        raise OSError(errno.ENOSYS, _seccomp_error or "libseccomp not found")
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    eperm = _scmp_act_errno(errno.EPERM)
    try:
        denied = sum(_rule(lib, ctx, eperm, name) for name in DENIED_SYSCALLS)
        # Threads are allowed (clone with CLONE_THREAD), new processes are not.
        _rule(lib, ctx, eperm, "clone", _ArgCmp(0, _SCMP_CMP_MASKED_EQ, _CLONE_THREAD, 0))
        # clone3 passes its flags in memory, out of a filter's reach: say it
        # does not exist, and the C library falls back to clone.
        _rule(lib, ctx, _scmp_act_errno(errno.ENOSYS), "clone3")
        # A socket pair (the event loop's self-pipe) reaches nobody; only AF_UNIX.
        _rule(lib, ctx, eperm, "socketpair", _ArgCmp(0, _SCMP_CMP_NE, 1, 0))
        # Signals only to ourselves (Landlock scoping does it too, from ABI 6).
        for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
            _rule(lib, ctx, eperm, name, _ArgCmp(0, _SCMP_CMP_NE, pid, 0))
        if export:
            fd = os.memfd_create("captp-seccomp", os.MFD_CLOEXEC)  # no size limit, no file
            try:
                rc = lib.seccomp_export_bpf(ctx, fd)
                if rc < 0:
                    raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
                size = os.lseek(fd, 0, os.SEEK_CUR)
                return denied, os.pread(fd, size, 0)
            finally:
                os.close(fd)
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
        return denied, b""
    finally:
        lib.seccomp_release(ctx)


def precompile_seccomp() -> None:
    """Build the filter now (in the zygote), so that each forked worker only loads it."""
    global _precompiled
    _precompiled = _build_seccomp(_PID_PLACEHOLDER, export=True)


def _load_precompiled(program: bytes, pid: int) -> None:
    filters = bytearray(program)
    patched = 0
    for offset in range(0, len(filters), 8):  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
        if int.from_bytes(filters[offset + 4 : offset + 8], sys.byteorder) == _PID_PLACEHOLDER:
            filters[offset + 4 : offset + 8] = pid.to_bytes(4, sys.byteorder)
            patched += 1
    if patched == 0:
        raise OSError(errno.EINVAL, "precompiled seccomp filter has no pid to patch")

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = (ctypes.c_char * len(filters)).from_buffer(filters)
    prog = _Prog(len(filters) // 8, ctypes.addressof(buffer))
    _check(
        _c().prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0),
        "prctl(PR_SET_SECCOMP)",
    )


def _apply_seccomp() -> str:
    pid = os.getpid()
    if _precompiled is not None:
        _load_precompiled(_precompiled[1], pid)
        return f"precompiled filter: {_precompiled[0]} system calls denied, no new processes"
    denied, _ = _build_seccomp(pid, export=False)
    return f"filter: {denied} system calls denied, no new processes"


# -- Landlock ----------------------------------------------------------------------


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _fs_rights(abi: int) -> int:
    rights = _FS_ABI1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def _apply_landlock(abi: int, read_paths: Iterable[str]) -> str:
    libc = _c()
    attr = _RulesetAttr(_fs_rights(abi), 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL
        size = 24
    fd = _check(
        libc.syscall(
            _SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
            ctypes.c_uint32(0),
        ),
        "landlock_create_ruleset",
    )
    try:
        for path in read_paths:
            opath = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                is_dir = os.path.isdir(path)
                rule = _PathBeneath(
                    _FS_READ_FILE | (_FS_READ_DIR if is_dir else 0), opath
                )
                _check(
                    libc.syscall(
                        _SYS_LANDLOCK_ADD_RULE, ctypes.c_int(fd),
                        ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule),
                        ctypes.c_uint32(0),
                    ),
                    f"landlock_add_rule({path})",
                )
            finally:
                os.close(opath)
        _check(
            libc.syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(fd), ctypes.c_uint32(0)),
            "landlock_restrict_self",
        )
    finally:
        os.close(fd)
    what = ["files"]
    if abi >= 4:
        what.append("TCP")
    if abi >= 6:
        what.append("abstract sockets and signals scoped")
    return f"ABI {abi}: " + ", ".join(what)


# -- probing and applying -----------------------------------------------------------


def probe() -> dict[str, Layer]:
    """What this kernel and system offer, layer by layer (nothing is changed)."""
    linux = sys.platform.startswith("linux")
    abi = landlock_abi()
    if abi == 0:
        landlock = Layer("landlock", False, "Landlock is absent or disabled (Linux 5.13+ with "
                         "landlock in CONFIG_LSM)")
    elif abi < STRICT_LANDLOCK_ABI:
        lost = "TCP rules and " if abi < 4 else ""
        landlock = Layer("landlock", False, f"ABI {abi} < {STRICT_LANDLOCK_ABI}: no {lost}"
                         "scoping of signals and abstract Unix sockets (Linux 6.12+)")
    else:
        landlock = Layer("landlock", True, f"ABI {abi}")
    namespaces = Layer("namespaces", linux and os.path.exists("/proc/self/ns/net"),
                       "network namespace" + ("" if os.geteuid() == 0 else " in a user namespace"))
    return {
        "rlimits": Layer("rlimits", True, "setrlimit"),
        "namespaces": namespaces,
        "no_new_privs": Layer("no_new_privs", linux, "prctl"),
        "landlock": landlock,
        "seccomp": _seccomp_probe(),
    }


def _single_threaded() -> None:
    tasks = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    if threading.active_count() != 1 or tasks != 1:
        raise RuntimeError(
            f"confine() must run single-threaded ({tasks} threads): Landlock and seccomp "
            "bind the calling thread only"
        )


def _set_rlimits(limits: dict[str, Any]) -> str:
    cpu = int(limits["cpu_s"])
    memory = int(limits["memory_bytes"])
    log_bytes = int(limits["log_bytes"])
    import resource  # POSIX only: imported where it is used

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The log (stdout and stderr) is a file: its size limit caps it.  Writes past
    # the cap fail with EFBIG instead of killing the worker with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (log_bytes, log_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    return f"cpu {cpu} s, address space {memory} bytes, log {log_bytes} bytes, 64 files"


def _drop_capabilities() -> None:
    # capset(version 3, pid 0) with every set empty.
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_c().capset(header, data), "capset")


def _enter_namespaces() -> str:
    libc = _c()
    if os.geteuid() == 0:
        netns = libc.unshare(_CLONE_NEWNET)
        err = ctypes.get_errno()
        # Drop root whether or not the namespace applied (best effort goes on).
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)  # leaves no capabilities
        if netns < 0:
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)} (uid {NOBODY} applied)")
        return f"network namespace; uid and gid {NOBODY}"
    _check(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET), "unshare(CLONE_NEWUSER|CLONE_NEWNET)")
    _drop_capabilities()  # the new user namespace grants all of them: keep none
    return "network namespace in a user namespace; no capabilities"


def confine(
    limits: dict[str, Any], read_paths: Iterable[str] = (), *, strict: bool = True
) -> dict[str, Layer]:
    """Apply every layer to this (single-threaded) process; what applied, layer by layer.

    With ``strict``, the first layer that cannot apply raises
    :class:`LayerUnavailable` (the process is then half-confined: end it).
    """
    _single_threaded()
    load_libseccomp()  # loading the .so needs the files Landlock is about to deny
    paths = list(read_paths)
    report: dict[str, Layer] = {}

    def attempt(name: str, apply: Any) -> None:
        try:
            report[name] = Layer(name, True, apply())
        except (OSError, RuntimeError, ValueError) as exc:
            report[name] = Layer(name, False, str(exc))
            if strict:
                raise LayerUnavailable(name, str(exc)) from exc

    def landlock() -> str:
        abi = landlock_abi()
        if abi == 0:
            raise OSError(errno.EOPNOTSUPP, "Landlock is absent or disabled")
        if strict and abi < STRICT_LANDLOCK_ABI:
            raise OSError(errno.EOPNOTSUPP, f"Landlock ABI {abi} < {STRICT_LANDLOCK_ABI}")
        return _apply_landlock(abi, paths)

    def no_new_privs() -> str:
        _check(_c().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        return "set"

    attempt("rlimits", lambda: _set_rlimits(limits))
    attempt("namespaces", _enter_namespaces)
    attempt("no_new_privs", no_new_privs)
    attempt("landlock", landlock)
    attempt("seccomp", _apply_seccomp)
    return report


def die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent ends (Linux)."""
    if sys.platform.startswith("linux"):
        _c().prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
