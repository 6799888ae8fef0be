//! The dm-multipath target's table and status lines, parsed (drivers/md/dm-mpath.c,
//! multipath_status()). Pure code.
//!
//! Table:  `<#feat> [feat..] <#hw> [hw..] <#PGs> <init PG> {<selector> <#sel args> [..]
//!          <#paths> <#path args> {<maj:min> [args]}+}+`
//! Status: `<#feat> [feat..] <#hw> [hw..] <#PGs> <next PG> {A|D|E <#sel args> [..]
//!          <#paths> <#path info args> {<maj:min> A|F <fail count> [info..]}+}+`

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevT {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for DevT {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for DevT {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<DevT, ParseError> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| ParseError::new("device", s))?;
        Ok(DevT {
            major: a.parse().map_err(|_| ParseError::new("device major", s))?,
            minor: b.parse().map_err(|_| ParseError::new("device minor", s))?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub what: &'static str,
    pub near: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, near: &str) -> ParseError {
        ParseError {
            what,
            near: near.to_string(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad multipath {} near '{}'", self.what, self.near)
    }
}

impl std::error::Error for ParseError {}

struct Words<'a>(std::str::SplitAsciiWhitespace<'a>);

/// Room for `n` items as a text announces them, but no more than a few: the count is
/// only as trustworthy as the text (a huge one must end in a parse error, not in an
/// allocation that aborts the daemon).
fn announced<T>(n: usize) -> Vec<T> {
    Vec::with_capacity(n.min(64))
}

impl<'a> Words<'a> {
    fn word(&mut self, what: &'static str) -> Result<&'a str, ParseError> {
        self.0.next().ok_or_else(|| ParseError::new(what, "<end>"))
    }
    fn num(&mut self, what: &'static str) -> Result<usize, ParseError> {
        let w = self.word(what)?;
        w.parse().map_err(|_| ParseError::new(what, w))
    }
    fn skip(&mut self, n: usize, what: &'static str) -> Result<Vec<&'a str>, ParseError> {
        (0..n).map(|_| self.word(what)).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipathTable {
    pub features: Vec<String>,
    pub hw_handler: Vec<String>,
    pub initial_group: usize,
    pub groups: Vec<GroupTable>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTable {
    pub selector: String,
    pub paths: Vec<DevT>,
}

impl MultipathTable {
    pub fn queue_if_no_path(&self) -> bool {
        self.features.iter().any(|f| f == "queue_if_no_path")
    }

    pub fn paths(&self) -> impl Iterator<Item = DevT> + '_ {
        self.groups.iter().flat_map(|g| g.paths.iter().copied())
    }
}

impl FromStr for MultipathTable {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut w = Words(s.split_ascii_whitespace());
        let n = w.num("feature count")?;
        let features = w
            .skip(n, "feature")?
            .into_iter()
            .map(String::from)
            .collect();
        let n = w.num("hardware handler count")?;
        let hw_handler = w
            .skip(n, "hardware handler")?
            .into_iter()
            .map(String::from)
            .collect();
        let ngroups = w.num("group count")?;
        let initial_group = w.num("initial group")?;
        let mut groups = announced(ngroups);
        for _ in 0..ngroups {
            let selector = w.word("path selector")?.to_string();
            let n = w.num("selector argument count")?;
            w.skip(n, "selector argument")?;
            let npaths = w.num("path count")?;
            let nargs = w.num("path argument count")?;
            let mut paths = announced(npaths);
            for _ in 0..npaths {
                paths.push(w.word("path")?.parse()?);
                w.skip(nargs, "path argument")?;
            }
            groups.push(GroupTable { selector, paths });
        }
        Ok(MultipathTable {
            features,
            hw_handler,
            initial_group,
            groups,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// The group in use.
    Active,
    /// Usable.
    Enabled,
    /// Bypassed (disable_group, or pg_init failed): used only when nothing else is left.
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipathStatus {
    /// 1-based number of the group dm will use next (0: none).
    pub next_group: usize,
    pub groups: Vec<GroupStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub state: GroupState,
    pub paths: Vec<PathStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathStatus {
    pub dev: DevT,
    /// 'A' (true) or 'F'.
    pub active: bool,
    pub fail_count: u32,
}

impl FromStr for MultipathStatus {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut w = Words(s.split_ascii_whitespace());
        let n = w.num("feature count")?;
        w.skip(n, "feature")?;
        let n = w.num("hardware handler count")?;
        w.skip(n, "hardware handler")?;
        let ngroups = w.num("group count")?;
        let next_group = w.num("next group")?;
        let mut groups = announced(ngroups);
        for _ in 0..ngroups {
            let state = match w.word("group state")? {
                "A" => GroupState::Active,
                "E" => GroupState::Enabled,
                "D" => GroupState::Disabled,
                other => return Err(ParseError::new("group state", other)),
            };
            let n = w.num("selector status count")?;
            w.skip(n, "selector status")?;
            let npaths = w.num("path count")?;
            let ninfo = w.num("path info count")?;
            let mut paths = announced(npaths);
            for _ in 0..npaths {
                let dev = w.word("path")?.parse()?;
                let active = match w.word("path state")? {
                    "A" => true,
                    "F" => false,
                    other => return Err(ParseError::new("path state", other)),
                };
                let fail_count = w.word("fail count")?;
                let fail_count = fail_count
                    .parse()
                    .map_err(|_| ParseError::new("fail count", fail_count))?;
                w.skip(ninfo, "path info")?;
                paths.push(PathStatus {
                    dev,
                    active,
                    fail_count,
                });
            }
            groups.push(GroupStatus { state, paths });
        }
        Ok(MultipathStatus { next_group, groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(major: u32, minor: u32) -> DevT {
        DevT { major, minor }
    }

    #[test]
    fn huge_counts_are_parse_errors_not_allocations() {
        let max = usize::MAX;
        for text in [
            format!("0 0 {max} 1"),
            format!("0 0 1 1 service-time 0 {max} 1 8:0 1"),
            format!("{max} queue_if_no_path"),
        ] {
            assert!(text.parse::<MultipathTable>().is_err(), "{text}");
        }
        for text in [
            format!("0 0 {max} 1"),
            format!("0 0 1 1 A 0 {max} 1 8:0 A 0"),
        ] {
            assert!(text.parse::<MultipathStatus>().is_err(), "{text}");
        }
    }

    #[test]
    fn table_with_features_and_two_groups() {
        let t: MultipathTable =
            "1 queue_if_no_path 1 alua 2 1 service-time 0 1 2 8:16 1 1 service-time 0 1 2 8:32 1 1"
                .parse()
                .unwrap();
        assert!(t.queue_if_no_path());
        assert_eq!(t.hw_handler, vec!["alua"]);
        assert_eq!(t.groups.len(), 2);
        assert_eq!(t.paths().collect::<Vec<_>>(), vec![d(8, 16), d(8, 32)]);
    }

    #[test]
    fn table_from_dmsetup() {
        let t: MultipathTable = "0 0 1 1 service-time 0 2 1 8:0 1 8:16 1".parse().unwrap();
        assert!(!t.queue_if_no_path());
        assert_eq!(t.groups[0].selector, "service-time");
        assert_eq!(t.groups[0].paths, vec![d(8, 0), d(8, 16)]);
        let t: MultipathTable = "2 queue_mode bio 0 1 1 round-robin 0 1 1 8:0 1"
            .parse()
            .unwrap();
        assert!(!t.queue_if_no_path());
    }

    #[test]
    fn status_with_a_failed_path() {
        let s: MultipathStatus = "2 0 0 0 1 1 A 0 2 2 8:0 A 0 0 1 8:16 F 1 0 1"
            .parse()
            .unwrap();
        assert_eq!(s.next_group, 1);
        assert_eq!(s.groups[0].state, GroupState::Active);
        assert_eq!(
            s.groups[0].paths,
            vec![
                PathStatus {
                    dev: d(8, 0),
                    active: true,
                    fail_count: 0
                },
                PathStatus {
                    dev: d(8, 16),
                    active: false,
                    fail_count: 1
                },
            ]
        );
    }

    #[test]
    fn status_two_groups_as_the_lab_prints_it() {
        let s: MultipathStatus = "2 0 0 0 2 2 E 0 1 2 8:0 F 1 0 1 A 0 1 2 8:16 A 0 4096 1"
            .parse()
            .unwrap();
        assert_eq!(s.next_group, 2);
        assert_eq!(s.groups[0].state, GroupState::Enabled);
        assert!(!s.groups[0].paths[0].active);
        assert_eq!(s.groups[1].state, GroupState::Active);
    }

    #[test]
    fn truncated_or_garbage_is_an_error() {
        assert!("2 0 0 0 1 1 A 0 2 2 8:0 A 0 0 1"
            .parse::<MultipathStatus>()
            .is_err());
        assert!("0 0 1 1 service-time 0 1 1 sda 1"
            .parse::<MultipathTable>()
            .is_err());
        assert!("".parse::<MultipathTable>().is_err());
        assert!("2 0 0 0 1 1 X 0 0 0".parse::<MultipathStatus>().is_err());
    }
}

/// Randomized tests of the parsers (`cargo test fuzz`; PROPTEST_CASES sets the count).
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::alloc_probe::largest_during;
    use proptest::prelude::*;

    /// Words the kernel's lines are made of, and counts that lie (0, large, huge).
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            (0usize..6).prop_map(|n| n.to_string()),
            prop_oneof![
                Just(1_000_000usize),
                Just(u32::MAX as usize),
                Just(usize::MAX)
            ]
            .prop_map(|n| n.to_string()),
            Just("18446744073709551616".to_string()),
            (0u32..300, 0u32..300).prop_map(|(a, b)| format!("{a}:{b}")),
            prop::sample::select(vec![
                "A",
                "E",
                "D",
                "F",
                "queue_if_no_path",
                "alua",
                "service-time",
                "round-robin",
                ":",
                "8:",
                ":0"
            ])
            .prop_map(String::from),
            "[ -~]{0,6}",
        ]
    }

    /// Random words, or a real table or status line with one word replaced by a lie.
    fn line() -> impl Strategy<Value = String> {
        let mutated = |text: String, at: prop::sample::Index, w: String| {
            let mut words: Vec<&str> = text.split_ascii_whitespace().collect();
            if !words.is_empty() {
                let i = at.index(words.len());
                words[i] = &w;
            }
            words.join(" ")
        };
        prop_oneof![
            prop::collection::vec(word(), 0..40).prop_map(|w| w.join(" ")),
            (table(), any::<prop::sample::Index>(), word())
                .prop_map(move |((_, t), at, w)| mutated(t, at, w)),
            (status(), any::<prop::sample::Index>(), word())
                .prop_map(move |((_, t), at, w)| mutated(t, at, w)),
        ]
    }

    fn dev() -> impl Strategy<Value = DevT> {
        (any::<u32>(), any::<u32>()).prop_map(|(major, minor)| DevT { major, minor })
    }

    fn args() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec("[a-z0-9_]{1,8}", 0..3)
    }

    /// A table with its text as dm-mpath writes it; path arguments are not modelled.
    fn table() -> impl Strategy<Value = (MultipathTable, String)> {
        let group = (
            "[a-z-]{1,12}",
            args(),
            prop::collection::vec(dev(), 1..5),
            0usize..3,
        );
        (
            args(),
            args(),
            prop::collection::vec(group, 0..4),
            0usize..5,
        )
            .prop_map(|(features, hw_handler, groups, initial_group)| {
                let mut text = format!("{} {} ", features.len(), features.join(" "));
                text += &format!("{} {} ", hw_handler.len(), hw_handler.join(" "));
                text += &format!("{} {} ", groups.len(), initial_group);
                let mut model = Vec::new();
                for (selector, sel_args, paths, nargs) in groups {
                    text += &format!(
                        "{selector} {} {} {} {nargs} ",
                        sel_args.len(),
                        sel_args.join(" "),
                        paths.len()
                    );
                    for p in &paths {
                        text += &format!("{p} {}", "1 ".repeat(nargs));
                    }
                    model.push(GroupTable { selector, paths });
                }
                (
                    MultipathTable {
                        features,
                        hw_handler,
                        initial_group,
                        groups: model,
                    },
                    text,
                )
            })
    }

    fn status() -> impl Strategy<Value = (MultipathStatus, String)> {
        let path = (dev(), any::<bool>(), any::<u32>());
        let group = (
            prop::sample::select(vec![
                GroupState::Active,
                GroupState::Enabled,
                GroupState::Disabled,
            ]),
            args(),
            prop::collection::vec(path, 1..5),
            0usize..3,
        );
        (args(), prop::collection::vec(group, 0..4), 0usize..5).prop_map(
            |(features, groups, next_group)| {
                let mut text = format!(
                    "{} {} 0 {} {next_group} ",
                    features.len(),
                    features.join(" "),
                    groups.len()
                );
                let mut model = Vec::new();
                for (state, sel, paths, ninfo) in groups {
                    let s = match state {
                        GroupState::Active => "A",
                        GroupState::Enabled => "E",
                        GroupState::Disabled => "D",
                    };
                    text += &format!(
                        "{s} {} {} {} {ninfo} ",
                        sel.len(),
                        sel.join(" "),
                        paths.len()
                    );
                    let mut ps = Vec::new();
                    for (dev, active, fail_count) in paths {
                        text += &format!(
                            "{dev} {} {fail_count} {}",
                            if active { "A" } else { "F" },
                            "0 ".repeat(ninfo)
                        );
                        ps.push(PathStatus {
                            dev,
                            active,
                            fail_count,
                        });
                    }
                    model.push(GroupStatus { state, paths: ps });
                }
                (
                    MultipathStatus {
                        next_group,
                        groups: model,
                    },
                    text,
                )
            },
        )
    }

    proptest! {
        /// Any text: a result or an error, and no allocation larger than the text could
        /// account for (a count in it is never the size of an allocation).
        #[test]
        fn any_text_parses_without_panic_in_bounded_memory(text in line()) {
            let bound = 4096 + 16 * text.len();
            let (_, largest) = largest_during(|| text.parse::<MultipathTable>().map(|_| ()));
            prop_assert!(largest <= bound, "table: {} bytes for {:?}", largest, text);
            let (_, largest) = largest_during(|| text.parse::<MultipathStatus>().map(|_| ()));
            prop_assert!(largest <= bound, "status: {} bytes for {:?}", largest, text);
            let (_, largest) = largest_during(|| text.parse::<crate::dm::message::Message>().map(|_| ()));
            prop_assert!(largest <= bound, "message: {} bytes for {:?}", largest, text);
        }

        #[test]
        fn tables_parse_to_what_they_say((model, text) in table()) {
            prop_assert_eq!(text.parse::<MultipathTable>(), Ok(model));
        }

        #[test]
        fn statuses_parse_to_what_they_say((model, text) in status()) {
            prop_assert_eq!(text.parse::<MultipathStatus>(), Ok(model));
        }

        /// A line cut short is an error, never a shorter map.
        #[test]
        fn a_table_or_status_cut_short_is_an_error(
            (t, ttext) in table(), (s, stext) in status(), cut in any::<prop::sample::Index>(),
        ) {
            let words: Vec<&str> = ttext.split_ascii_whitespace().collect();
            let n = cut.index(words.len().max(1));
            if n < words.len() {
                let short = words[..n].join(" ");
                prop_assert!(short.parse::<MultipathTable>().is_err() || t.groups.is_empty());
            }
            let words: Vec<&str> = stext.split_ascii_whitespace().collect();
            let n = cut.index(words.len().max(1));
            if n < words.len() {
                let short = words[..n].join(" ");
                prop_assert!(short.parse::<MultipathStatus>().is_err() || s.groups.is_empty());
            }
        }

        #[test]
        fn devices_round_trip(d in dev(), junk in "[ -~]{0,12}") {
            prop_assert_eq!(d.to_string().parse::<DevT>(), Ok(d));
            if let Ok(p) = junk.parse::<DevT>() {
                prop_assert_eq!(p.to_string().parse::<DevT>(), Ok(p));
            }
        }
    }
}
