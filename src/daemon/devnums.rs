//! Stable device numbers: all nodes share one character major and each map keeps its
//! minor across restarts (containers' device rules name major:minor), persisted in a small
//! text file under the state directory:
//!
//! ```text
//! major 120
//! minor 0 mpath-3600a0b80001234
//! minor 1 name:lab1
//! ```
//! A map is keyed by its DM uuid (stable across renames) or, without one, by its name.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Character majors LANANA reserves for local/experimental use that the kernel never hands
/// out dynamically (dynamic majors are 234-254 and 384-511).
const LOCAL_MAJORS: [u32; 12] = [120, 121, 122, 123, 124, 125, 126, 127, 60, 61, 62, 63];
const FILE: &str = "devnums";

#[derive(Debug)]
pub struct DevNums {
    path: PathBuf,
    pub major: u32,
    minors: BTreeMap<String, u32>,
    /// Whether the file holds what memory holds: device-mapper events come by the
    /// hundred (every fail_path and reinstate_path raises one), and a save is an fsync
    /// under the registry's lock, so only a change is written.
    saved: bool,
}

impl DevNums {
    /// Loads the state, or picks a free local major (per `proc_devices`) on first start.
    pub fn load(state_dir: &Path, proc_devices: &str) -> io::Result<DevNums> {
        let path = state_dir.join(FILE);
        let mut major = None;
        let mut minors = BTreeMap::new();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let bad = || {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}:{}: cannot parse '{line}'", path.display(), i + 1),
                        )
                    };
                    let mut w = line.splitn(3, ' ');
                    match (w.next(), w.next(), w.next()) {
                        (Some("major"), Some(m), None) => {
                            major = Some(m.parse().map_err(|_| bad())?)
                        }
                        (Some("minor"), Some(m), Some(key)) => {
                            minors.insert(key.to_string(), m.parse().map_err(|_| bad())?);
                        }
                        (Some(""), None, None) | (Some("#"), _, _) => {}
                        _ => return Err(bad()),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        let saved = major.is_some();
        let major = match major {
            Some(m) => m,
            None => free_local_major(proc_devices).ok_or_else(|| {
                io::Error::other("no free character major among the local/experimental ones (60-63, 120-127); set one with --major")
            })?,
        };
        Ok(DevNums {
            path,
            major,
            minors,
            saved,
        })
    }

    pub fn set_major(&mut self, major: u32) {
        if major != self.major {
            self.major = major;
            self.saved = false;
        }
    }

    /// The map's minor, allocating the lowest free one for a new map.
    pub fn minor_for(&mut self, key: &str) -> u32 {
        if let Some(&m) = self.minors.get(key) {
            return m;
        }
        let used: std::collections::BTreeSet<u32> = self.minors.values().copied().collect();
        let m = (0..).find(|m| !used.contains(m)).expect("a free minor");
        self.minors.insert(key.to_string(), m);
        self.saved = false;
        m
    }

    /// A map without a uuid was renamed: it keeps its minor under the new key.
    pub fn rename(&mut self, old_key: &str, new_key: &str) {
        if old_key == new_key || self.minors.contains_key(new_key) {
            return;
        }
        if let Some(m) = self.minors.remove(old_key) {
            self.minors.insert(new_key.to_string(), m);
            self.saved = false;
        }
    }

    /// Writes the state atomically (temporary file + rename) if it changed since it was
    /// loaded or last saved.
    pub fn save_changes(&mut self) -> io::Result<()> {
        if self.saved {
            return Ok(());
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let tmp = self.path.with_extension("tmp");
        let mut f = fs::File::create(&tmp)?;
        writeln!(
            f,
            "# mpath-sgd device numbers: keep them stable across restarts"
        )?;
        writeln!(f, "major {}", self.major)?;
        for (key, m) in &self.minors {
            writeln!(f, "minor {m} {key}")?;
        }
        f.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        self.saved = true;
        Ok(())
    }
}

/// Map key: the DM uuid when there is one (survives renames), else the name.
pub fn map_key(name: &str, uuid: &str) -> String {
    if uuid.is_empty() {
        format!("name:{name}")
    } else {
        uuid.to_string()
    }
}

fn free_local_major(proc_devices: &str) -> Option<u32> {
    let used: Vec<u32> = proc_devices
        .lines()
        .skip_while(|l| !l.starts_with("Character devices"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    LOCAL_MAJORS.into_iter().find(|m| !used.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "Character devices:\n  1 mem\n120 other\n121 x\n\nBlock devices:\n122 y\n";

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mpath-sg-devnums-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn picks_a_free_local_major_and_stable_minors() {
        let dir = tmpdir("a");
        let mut d = DevNums::load(&dir, PROC).unwrap();
        assert_eq!(
            d.major, 122,
            "120 and 121 are taken; block majors do not count"
        );
        assert_eq!(d.minor_for("mpath-a"), 0);
        assert_eq!(d.minor_for("name:b"), 1);
        assert_eq!(d.minor_for("mpath-a"), 0);
        d.save_changes().unwrap();
        // a restart, with other majors in use now: the saved numbers win
        let mut again = DevNums::load(&dir, "Character devices:\n122 mpath-sg/x\n").unwrap();
        assert_eq!(again.major, 122);
        assert_eq!(again.minor_for("name:b"), 1);
        assert_eq!(again.minor_for("mpath-c"), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let dir = tmpdir("b");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(FILE), "major x\n").unwrap();
        let e = DevNums::load(&dir, PROC).unwrap_err();
        assert!(e.to_string().contains("devnums:1"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_renamed_map_keeps_its_minor() {
        let dir = tmpdir("c");
        let mut d = DevNums::load(&dir, PROC).unwrap();
        let a = d.minor_for("name:a");
        let b = d.minor_for("name:b");
        d.rename("name:a", "name:c");
        assert_eq!(d.minor_for("name:c"), a);
        assert_ne!(d.minor_for("name:a"), a, "the old key is free again");
        d.rename("name:b", "name:c");
        assert_eq!(
            (d.minor_for("name:b"), d.minor_for("name:c")),
            (b, a),
            "no clobbering"
        );
    }

    #[test]
    fn only_a_change_is_written() {
        let dir = tmpdir("d");
        let mut d = DevNums::load(&dir, PROC).unwrap();
        d.minor_for("name:a");
        d.save_changes().unwrap();
        fs::remove_file(dir.join(FILE)).unwrap();
        d.minor_for("name:a");
        d.set_major(d.major);
        d.rename("name:zz", "name:yy");
        d.save_changes().unwrap();
        assert!(!dir.join(FILE).exists(), "nothing changed, nothing written");
        d.minor_for("name:b");
        d.save_changes().unwrap();
        assert!(dir.join(FILE).exists(), "a new map's minor is written");
        let mut again = DevNums::load(&dir, PROC).unwrap();
        fs::remove_file(dir.join(FILE)).unwrap();
        again.save_changes().unwrap();
        assert!(!dir.join(FILE).exists(), "a loaded state is saved already");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys() {
        assert_eq!(map_key("mpatha", ""), "name:mpatha");
        assert_eq!(map_key("mpatha", "mpath-36001"), "mpath-36001");
    }
}
