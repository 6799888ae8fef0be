//! `mpath-sgd status`: the running daemon answers on a unix socket (root only, mode 0600)
//! with what it serves: per map the node, its major:minor and open files; per path the
//! device, sg node, device-mapper state, commands, path errors, failovers and the last
//! error. One request per connection: "status" (text) or "status json".

use super::error::StatusError;
use super::registry::Registry;
use parking_lot::Mutex;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

pub const DEFAULT_SOCKET: &str = "/run/mpath-sg/mpath-sgd.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapReport {
    pub name: String,
    pub node: String,
    pub major: u32,
    pub minor: u32,
    pub open_files: usize,
    pub paths: Vec<PathReport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathReport {
    /// "8:16"
    pub dev: String,
    /// "sdb", or "" when the path could not be opened
    pub block: String,
    pub sg: String,
    /// 1-based priority group
    pub group: usize,
    /// "active" or "failed", as device-mapper has it
    pub dm_state: &'static str,
    pub commands: u64,
    pub path_errors: u64,
    pub failovers: u64,
    /// (seconds since the epoch, reason)
    pub last_error: Option<(u64, String)>,
}

/// The report, device-mapper's path states re-read now.
pub fn report(reg: &Registry) -> Vec<MapReport> {
    reg.maps()
        .map(|p| {
            let snap = p.engine.refresh().unwrap_or_else(|_| p.engine.snapshot());
            let mut paths = Vec::new();
            for (gi, g) in snap.groups.iter().enumerate() {
                for e in &g.paths {
                    let (block, sg) = match &e.opened {
                        Some((info, _)) => {
                            (info.block_name.clone(), info.sg_node.display().to_string())
                        }
                        None => (String::new(), String::new()),
                    };
                    let last_error = e.stats.last_error.lock().as_ref().map(|(t, why)| {
                        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                        (secs, why.clone())
                    });
                    paths.push(PathReport {
                        dev: e.dev.to_string(),
                        block,
                        sg,
                        group: gi + 1,
                        dm_state: if e.dm_active { "active" } else { "failed" },
                        commands: e.stats.commands.load(Ordering::Relaxed),
                        path_errors: e.stats.path_errors.load(Ordering::Relaxed),
                        failovers: e.stats.failovers.load(Ordering::Relaxed),
                        last_error,
                    });
                }
            }
            MapReport {
                name: p.name.clone(),
                node: format!("/dev/{}/{}", super::DEV_DIR, p.name),
                major: p.major,
                minor: p.minor,
                open_files: p.node.open_files(),
                paths,
            }
        })
        .collect()
}

/// "2026-11-24T22:40:01Z" from seconds since the epoch (UTC, proleptic Gregorian).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn text(maps: &[MapReport]) -> String {
    if maps.is_empty() {
        return "no maps published\n".to_string();
    }
    let mut s = String::new();
    for m in maps {
        s += &format!(
            "{} {} {}:{} open files {}\n",
            m.name, m.node, m.major, m.minor, m.open_files
        );
        for p in &m.paths {
            let last = match &p.last_error {
                Some((t, why)) => format!("{} {why}", utc(*t)),
                None => "-".to_string(),
            };
            s += &format!(
                "  {:<8} {:<6} {:<10} group {} {:<6} commands {} path errors {} failovers {} last error {}\n",
                p.dev,
                if p.block.is_empty() { "-" } else { &p.block },
                if p.sg.is_empty() { "-" } else { &p.sg },
                p.group,
                p.dm_state,
                p.commands,
                p.path_errors,
                p.failovers,
                last
            );
        }
    }
    s
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn json(maps: &[MapReport]) -> String {
    let maps: Vec<String> = maps
        .iter()
        .map(|m| {
            let paths: Vec<String> = m
                .paths
                .iter()
                .map(|p| {
                    let last = match &p.last_error {
                        Some((t, why)) => format!(
                            "{{\"time\":{},\"utc\":{},\"reason\":{}}}",
                            t,
                            json_str(&utc(*t)),
                            json_str(why)
                        ),
                        None => "null".to_string(),
                    };
                    format!(
                        "{{\"dev\":{},\"block\":{},\"sg\":{},\"group\":{},\"dm_state\":{},\"commands\":{},\"path_errors\":{},\"failovers\":{},\"last_error\":{}}}",
                        json_str(&p.dev),
                        json_str(&p.block),
                        json_str(&p.sg),
                        p.group,
                        json_str(p.dm_state),
                        p.commands,
                        p.path_errors,
                        p.failovers,
                        last
                    )
                })
                .collect();
            format!(
                "{{\"name\":{},\"node\":{},\"major\":{},\"minor\":{},\"open_files\":{},\"paths\":[{}]}}",
                json_str(&m.name),
                json_str(&m.node),
                m.major,
                m.minor,
                m.open_files,
                paths.join(",")
            )
        })
        .collect();
    format!("{{\"maps\":[{}]}}\n", maps.join(","))
}

/// Listens on `path` (replacing a stale socket) and answers each connection on its own
/// short-lived thread, so that a client that does not talk cannot hold up another one.
pub fn serve(path: &Path, registry: Arc<Mutex<Registry>>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let registry = registry.clone();
                let _ = std::thread::Builder::new()
                    .name("status-conn".into())
                    .spawn(move || {
                        if let Err(e) = answer(conn, &registry) {
                            tracing::debug!("status request: {e}");
                        }
                    });
            }
        })?;
    Ok(())
}

fn answer(conn: UnixStream, registry: &Mutex<Registry>) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new((&conn).take(256)).read_line(&mut line)?;
    let reply = match line.trim() {
        "status" => text(&report(&registry.lock())),
        "status json" => json(&report(&registry.lock())),
        other => format!(
            "error: unknown request {:?}\n",
            other.chars().take(40).collect::<String>()
        ),
    };
    (&conn).write_all(reply.as_bytes())
}

/// The client side: asks the daemon at `path` and returns its answer.
pub fn query(path: &Path, json: bool) -> Result<String, StatusError> {
    let io = |source| StatusError::Io {
        socket: path.to_path_buf(),
        source,
    };
    let mut conn = UnixStream::connect(path).map_err(|source| StatusError::Unreachable {
        socket: path.to_path_buf(),
        source,
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    conn.write_all(if json { b"status json\n" } else { b"status\n" })
        .map_err(io)?;
    let mut out = String::new();
    conn.read_to_string(&mut out).map_err(io)?;
    if let Some(err) = out.strip_prefix("error: ") {
        return Err(StatusError::Refused(err.trim().to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<MapReport> {
        vec![MapReport {
            name: "mpatha".into(),
            node: "/dev/mpath-sg/mpatha".into(),
            major: 120,
            minor: 0,
            open_files: 2,
            paths: vec![
                PathReport {
                    dev: "8:0".into(),
                    block: "sda".into(),
                    sg: "/dev/sg0".into(),
                    group: 1,
                    dm_state: "failed",
                    commands: 10,
                    path_errors: 1,
                    failovers: 1,
                    last_error: Some((1_795_990_801, "device \"offline\"".into())),
                },
                PathReport {
                    dev: "8:16".into(),
                    block: "sdb".into(),
                    sg: "/dev/sg1".into(),
                    group: 2,
                    dm_state: "active",
                    commands: 5,
                    path_errors: 0,
                    failovers: 0,
                    last_error: None,
                },
            ],
        }]
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_990_801), "2026-11-29T22:20:01Z");
    }

    #[test]
    fn text_report() {
        let t = text(&sample());
        assert!(
            t.starts_with("mpatha /dev/mpath-sg/mpatha 120:0 open files 2\n"),
            "{t}"
        );
        assert!(t.contains("8:0      sda    /dev/sg0   group 1 failed commands 10 path errors 1 failovers 1 last error 2026-11-29T22:20:01Z device \"offline\""), "{t}");
        assert!(t.contains("8:16     sdb    /dev/sg1   group 2 active commands 5 path errors 0 failovers 0 last error -"), "{t}");
        assert_eq!(text(&[]), "no maps published\n");
    }

    #[test]
    fn json_report_escapes_and_nests() {
        let j = json(&sample());
        assert!(j.starts_with("{\"maps\":[{\"name\":\"mpatha\",\"node\":\"/dev/mpath-sg/mpatha\",\"major\":120,\"minor\":0,\"open_files\":2,\"paths\":[{\"dev\":\"8:0\""), "{j}");
        assert!(j.contains("\"reason\":\"device \\\"offline\\\"\""), "{j}");
        assert!(j.contains("\"last_error\":null"), "{j}");
        assert_eq!(json(&[]), "{\"maps\":[]}\n");
    }
}
