//! systemd's file descriptor store (sd_notify(3) FDSTORE=1, sd_listen_fds(3)), without
//! libsystemd: how the nodes outlive a restart. Each node's /dev/cuse fd is stored as
//! it is published and removed from the store as the node is removed; the daemon's
//! successor (after `systemctl restart`, an upgrade, or a crash with Restart=on-failure)
//! gets them back as inherited fds named by LISTEN_FDNAMES. While systemd holds a copy,
//! closing the daemon's own does not remove the node: the kernel removes a CUSE device
//! when the last reference to its /dev/cuse file goes.

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The first inherited fd (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

/// Whether fds can be stored: a service manager listens (NOTIFY_SOCKET), and does not say
/// its store holds none (systemd 254 and later set FDSTORE to FileDescriptorStoreMax=;
/// older ones, Debian 12's 252 among them, say nothing, and the unit is trusted).
pub fn available() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
        && std::env::var("FDSTORE").map_or(true, |n| n.trim() != "0")
}

/// Sends `state` to $NOTIFY_SOCKET, with `fd` attached if given. Does nothing without a
/// service manager.
pub fn notify(state: &str, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name),
        None => UnixAddr::new(bytes),
    }
    .map_err(io::Error::from)?;
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let iov = [io::IoSlice::new(state.as_bytes())];
    let raw: [RawFd; 1] = [fd.map_or(-1, |f| f.as_raw_fd())];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if fd.is_some() { &cmsg } else { &[] };
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )
    .map_err(io::Error::from)?;
    Ok(())
}

/// Stores `fd` under `name` (FDPOLL=0: systemd must not watch it, a /dev/cuse fd polls
/// readable whenever a request waits).
pub fn store(name: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
    check_name(name)?;
    notify(&format!("FDSTORE=1\nFDNAME={name}\nFDPOLL=0"), Some(fd))
}

/// Removes (and so closes, in the service manager) the fds stored under `name`.
pub fn remove(name: &str) -> io::Result<()> {
    check_name(name)?;
    notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), None)
}

/// sd_notify(3): a name of at most 255 printable ASCII characters, without ':'.
fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} cannot name a stored fd"),
        ))
    }
}

/// The fds the service manager passed (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), each with
/// its name, taken over (close-on-exec set) and the variables removed. Empty when they are
/// absent or meant for another process.
pub fn take_listened() -> Vec<(String, OwnedFd)> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Vec::new();
    };
    let me = std::process::id().to_string();
    let parsed = parse_listen(&pid, &count, &names, &me);
    let mut out = Vec::new();
    for (i, name) in parsed.into_iter().enumerate() {
        let raw = LISTEN_FDS_START + i as RawFd;
        // Only fds that are open: a wrong LISTEN_FDS must not make the daemon own (and
        // later close) a descriptor it opened itself for something else.
        // SAFETY: F_GETFD reads a flag of whatever `raw` is, touching no memory; a
        // closed fd gives EBADF.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            tracing::warn!("inherited fd {raw} ({name}) is not open");
            continue;
        }
        // SAFETY: `raw` is open (checked above) and was passed to this process by its
        // service manager to own (sd_listen_fds(3)); nothing else in the daemon refers to
        // the fds from 3 on before this runs (it is called first thing in `run`).
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        out.push((name, fd));
    }
    out
}

/// The names of the passed fds, one per fd; none if the variables are not for `me` or
/// malformed. A missing or short LISTEN_FDNAMES names the rest "unknown", as systemd does.
fn parse_listen(pid: &str, count: &str, names: &str, me: &str) -> Vec<String> {
    if pid != me {
        return Vec::new();
    }
    let Ok(n) = count.parse::<usize>() else {
        return Vec::new();
    };
    // More than the daemon could ever have stored: refuse rather than claim fds.
    if n > 65536 {
        return Vec::new();
    }
    let mut given = names
        .split(':')
        .filter(|s| !names.is_empty() || !s.is_empty());
    (0..n)
        .map(|_| given.next().unwrap_or("unknown").to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_variables_for_this_process_name_each_fd() {
        assert_eq!(
            parse_listen("42", "3", "node.1.2:files:handover", "42"),
            ["node.1.2", "files", "handover"]
        );
        assert_eq!(parse_listen("42", "2", "", "42"), ["unknown", "unknown"]);
        assert_eq!(parse_listen("42", "2", "a", "42"), ["a", "unknown"]);
    }

    #[test]
    fn listen_variables_for_another_process_or_malformed_give_nothing() {
        assert!(parse_listen("41", "3", "a:b:c", "42").is_empty());
        assert!(parse_listen("42", "x", "a", "42").is_empty());
        assert!(parse_listen("42", "99999999", "", "42").is_empty());
    }

    #[test]
    fn stored_names_are_what_sd_notify_accepts() {
        assert!(check_name("node.240.3").is_ok());
        assert!(check_name("a:b").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn fds_reach_the_notify_socket_with_their_names() {
        use std::os::unix::net::UnixDatagram;
        let dir = std::env::temp_dir().join(format!("fdstore-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let a = OwnedFd::from(a);
        use std::os::fd::AsFd;
        store("node.7.9", a.as_fd()).unwrap();
        remove("node.7.9").unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 256];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            listener.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .unwrap();
        let fds: Vec<RawFd> = msg
            .cmsgs()
            .unwrap()
            .filter_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(f) => Some(f),
                _ => None,
            })
            .flatten()
            .collect();
        let n = msg.bytes;
        assert_eq!(&buf[..n], b"FDSTORE=1\nFDNAME=node.7.9\nFDPOLL=0");
        assert_eq!(fds.len(), 1);
        // SAFETY: the fd just arrived with SCM_RIGHTS; this test owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"FDSTOREREMOVE=1\nFDNAME=node.7.9");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
