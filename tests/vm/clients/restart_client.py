#!/usr/bin/env python3
"""A caller across daemon restarts (tests/vm/scenarios/45-restart.sh).

restart_client.py hold NODE CONTROL_FIFO
    Opens NODE O_RDWR and changes its sg settings; starts a blocking read() (nothing is
    outstanding, so it waits); write()s an INQUIRY on a second file and leaves its result
    unread; on "slow", starts an SG_IO READ(10) that the LU answers slowly;
    prints HOLD_READY and waits for "check" on CONTROL_FIFO (the scenario restarts the
    daemon meanwhile). Then: the settings are still the file's, the second file's read()
    returns the INQUIRY written before the restart (its data too), a write() of an INQUIRY
    (pack_id 7) completes the blocked read(), a forked child's read() is refused (EPERM:
    the opener is still known), and the SG_IO's result. Prints HOLD_RESULT key=value...

restart_client.py load NODE SECONDS LBA_BASE
    SG_IO WRITE(10) of stamped blocks and READ(10) back, checked, for SECONDS on one fd:
    prints LOAD_RESULT ios= errors= mismatches= max_ms=.

restart_client.py inflight NODE OP SECONDS_SLOW
    One SG_IO (OP: read, write, or writesame: WRITE SAME(10)) on a slow LU, printing INFLIGHT_START, then its outcome
    INFLIGHT_RESULT errno= status= host= driver= ms=; SIGUSR1 interrupts it.
"""
import ctypes
import errno
import fcntl
import os
import signal
import struct
import sys
import threading
import time

SG_IO = 0x2285
SG_SET_TIMEOUT, SG_GET_TIMEOUT = 0x2201, 0x2202
SG_SET_RESERVED_SIZE, SG_GET_RESERVED_SIZE = 0x2275, 0x2272
SG_SET_KEEP_ORPHAN, SG_GET_KEEP_ORPHAN = 0x2287, 0x2288
FROM_DEV, TO_DEV = -3, -2


class Hdr(ctypes.Structure):
    _fields_ = [
        ("interface_id", ctypes.c_int), ("dxfer_direction", ctypes.c_int),
        ("cmd_len", ctypes.c_ubyte), ("mx_sb_len", ctypes.c_ubyte),
        ("iovec_count", ctypes.c_ushort), ("dxfer_len", ctypes.c_uint),
        ("dxferp", ctypes.c_void_p), ("cmdp", ctypes.c_void_p), ("sbp", ctypes.c_void_p),
        ("timeout", ctypes.c_uint), ("flags", ctypes.c_uint), ("pack_id", ctypes.c_int),
        ("usr_ptr", ctypes.c_void_p), ("status", ctypes.c_ubyte),
        ("masked_status", ctypes.c_ubyte), ("msg_status", ctypes.c_ubyte),
        ("sb_len_wr", ctypes.c_ubyte), ("host_status", ctypes.c_ushort),
        ("driver_status", ctypes.c_ushort), ("resid", ctypes.c_int),
        ("duration", ctypes.c_uint), ("info", ctypes.c_uint),
    ]


assert ctypes.sizeof(Hdr) == 88


class Cmd:
    """A command with its own buffers (kept alive with the header)."""

    def __init__(self, cdb, direction, length, pack_id=0, timeout=20000):
        self.cdb = ctypes.create_string_buffer(bytes(cdb), len(cdb))
        self.sense = ctypes.create_string_buffer(32)
        self.data = ctypes.create_string_buffer(max(length, 1))
        h = Hdr()
        h.interface_id = ord("S")
        h.dxfer_direction = direction
        h.cmd_len = len(cdb)
        h.mx_sb_len = 32
        h.dxfer_len = length
        h.dxferp = ctypes.addressof(self.data) if length else None
        h.cmdp = ctypes.addressof(self.cdb)
        h.sbp = ctypes.addressof(self.sense)
        h.timeout = timeout
        h.pack_id = pack_id
        self.hdr = h


def rw10(op, lba, blocks):
    return struct.pack(">BBIBHB", op, 0, lba, 0, blocks, 0)


def sg_io(fd, cmd):
    """(errno, status, host, driver) of one SG_IO."""
    try:
        fcntl.ioctl(fd, SG_IO, cmd.hdr)
    except OSError as e:
        return (e.errno, 0, 0, 0)
    h = cmd.hdr
    return (0, h.status, h.host_status, h.driver_status)


def get_int(fd, req):
    buf = bytearray(4)
    fcntl.ioctl(fd, req, buf)
    return struct.unpack("i", buf)[0]


def hold(node, fifo):
    fd = os.open(node, os.O_RDWR)
    fcntl.ioctl(fd, SG_SET_TIMEOUT, struct.pack("i", 4321))
    fcntl.ioctl(fd, SG_SET_RESERVED_SIZE, struct.pack("i", 65536))
    fcntl.ioctl(fd, SG_SET_KEEP_ORPHAN, struct.pack("i", 1))
    got = {}

    def blocked_read():
        try:
            b = os.read(fd, 88)
            h = Hdr.from_buffer_copy(b)
            got["read"] = f"ok:pack_id={h.pack_id}:status={h.status}:host={h.host_status}"
        except OSError as e:
            got["read"] = errno.errorcode.get(e.errno, str(e.errno))

    reader = threading.Thread(target=blocked_read)
    reader.start()
    slow = Cmd(rw10(0x28, 0, 8), FROM_DEV, 4096)

    def slow_io():
        t = time.monotonic()
        e, st, host, drv = sg_io(fd, slow)
        got["slow"] = f"errno={e}:status={st}:host={host}:driver={drv}:ms={int((time.monotonic() - t) * 1000)}"

    slower = threading.Thread(target=slow_io)
    # A write() whose result is read only after the restart, on a second file.
    fd2 = os.open(node, os.O_RDWR)
    unread = Cmd([0x12, 0, 0, 0, 96, 0], FROM_DEV, 96, pack_id=5)
    os.write(fd2, bytes(unread.hdr))
    time.sleep(0.3)  # the read() is parked in the daemon, the INQUIRY done, by now
    print("HOLD_READY", flush=True)
    with open(fifo) as ctl:
        for line in ctl:
            if line.strip() == "slow":
                slower.start()
                time.sleep(0.3)
                print("HOLD_SLOW_STARTED", flush=True)
            if line.strip() == "check":
                break
    out = {
        "timeout": fcntl.ioctl(fd, SG_GET_TIMEOUT),
        "reserved": get_int(fd, SG_GET_RESERVED_SIZE),
        "keep_orphan": get_int(fd, SG_GET_KEEP_ORPHAN),
    }
    if slower.is_alive() or "slow" in got:
        slower.join(60)
        out["slow"] = got.get("slow", "hung")
    h = Hdr.from_buffer_copy(os.read(fd2, 88))
    vendor = unread.data.raw[8:16].decode(errors="replace").strip() or "none"
    out["unread_result"] = f"pack_id={h.pack_id}:status={h.status}:host={h.host_status}:vendor={vendor}"
    inq = Cmd([0x12, 0, 0, 0, 96, 0], FROM_DEV, 96, pack_id=7)
    os.write(fd, bytes(inq.hdr))
    reader.join(10)
    out["read"] = got.get("read", "hung")
    pid = os.fork()
    if pid == 0:
        try:
            os.read(fd, 88)
            os._exit(0)
        except OSError as e:
            os._exit(e.errno)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    out["child_read"] = errno.errorcode.get(code, str(code)) if code else "allowed"
    print("HOLD_RESULT " + " ".join(f"{k}={v}" for k, v in out.items()), flush=True)
    os._exit(0)


def load(node, seconds, base):
    fd = os.open(node, os.O_RDWR)
    ios = errors = mismatches = 0
    worst = 0.0
    end = time.monotonic() + float(seconds)
    i = 0
    while time.monotonic() < end:
        lba = int(base) + (i % 256) * 8
        stamp = struct.pack(">QQ", i, lba) * 256  # 4 KiB
        w = Cmd(rw10(0x2A, lba, 8), TO_DEV, 4096)
        ctypes.memmove(w.data, stamp, 4096)
        r = Cmd(rw10(0x28, lba, 8), FROM_DEV, 4096)
        for c in (w, r):
            t = time.monotonic()
            res = sg_io(fd, c)
            worst = max(worst, time.monotonic() - t)
            ios += 1
            if res != (0, 0, 0, 0):
                errors += 1
                print(f"LOAD_ERROR op={c.cdb.raw[0]:#x} lba={lba} result={res}", flush=True)
        if r.data.raw[:4096] != stamp:
            mismatches += 1
        i += 1
    print(f"LOAD_RESULT ios={ios} errors={errors} mismatches={mismatches} max_ms={int(worst * 1000)}", flush=True)


def inflight(node, op, _slow):
    def interrupted(*_):
        raise OSError(errno.EINTR, "interrupted")

    # Raising stops Python from repeating the ioctl after EINTR (PEP 475).
    signal.signal(signal.SIGUSR1, interrupted)
    fd = os.open(node, os.O_RDWR)
    if op == "read":
        c = Cmd(rw10(0x28, 4096, 8), FROM_DEV, 4096)
    elif op == "write":
        c = Cmd(rw10(0x2A, 4096, 8), TO_DEV, 4096)
    else:  # writesame: WRITE SAME(10) of one block over 8, which is never repeated
        c = Cmd(struct.pack(">BBIBHB", 0x41, 0, 4096, 0, 8, 0), TO_DEV, 512)
    print("INFLIGHT_START", flush=True)
    t = time.monotonic()
    e, st, host, drv = sg_io(fd, c)
    ms = int((time.monotonic() - t) * 1000)
    print(f"INFLIGHT_RESULT errno={errno.errorcode.get(e, e) if e else 0} status={st} host={host} driver={drv} ms={ms}", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    {"hold": hold, "load": load, "inflight": inflight}[mode](*sys.argv[2:])
