//! The messages the multipath target takes (DM_TARGET_MSG at sector 0;
//! drivers/md/dm-mpath.c, multipath_message()), as a typed value: `Display` writes the
//! text the kernel parses, `FromStr` reads it back (the round trip is tested).

use super::model::{DevT, ParseError};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// `fail_path <maj:min>`: the path gets no more I/O until reinstated.
    FailPath(DevT),
    /// `reinstate_path <maj:min>`
    ReinstatePath(DevT),
    /// `switch_group <n>` (1-based priority group)
    SwitchGroup(u32),
    /// `enable_group <n>`
    EnableGroup(u32),
    /// `disable_group <n>`: the group is bypassed until a path in another fails.
    DisableGroup(u32),
    /// `queue_if_no_path`
    QueueIfNoPath,
    /// `fail_if_no_path`
    FailIfNoPath,
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::FailPath(d) => write!(f, "fail_path {d}"),
            Message::ReinstatePath(d) => write!(f, "reinstate_path {d}"),
            Message::SwitchGroup(n) => write!(f, "switch_group {n}"),
            Message::EnableGroup(n) => write!(f, "enable_group {n}"),
            Message::DisableGroup(n) => write!(f, "disable_group {n}"),
            Message::QueueIfNoPath => f.write_str("queue_if_no_path"),
            Message::FailIfNoPath => f.write_str("fail_if_no_path"),
        }
    }
}

impl FromStr for Message {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Message, ParseError> {
        let mut words = s.split_ascii_whitespace();
        let verb = words.next().unwrap_or("");
        let arg = words.next();
        if words.next().is_some() {
            return Err(ParseError::new("message (too many words)", s));
        }
        let group = |arg: Option<&str>| -> Result<u32, ParseError> {
            arg.and_then(|a| a.parse().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| ParseError::new("message group number", s))
        };
        let dev = |arg: Option<&str>| -> Result<DevT, ParseError> {
            arg.ok_or_else(|| ParseError::new("message path", s))?
                .parse()
        };
        Ok(match (verb, arg) {
            ("fail_path", a) => Message::FailPath(dev(a)?),
            ("reinstate_path", a) => Message::ReinstatePath(dev(a)?),
            ("switch_group", a) => Message::SwitchGroup(group(a)?),
            ("enable_group", a) => Message::EnableGroup(group(a)?),
            ("disable_group", a) => Message::DisableGroup(group(a)?),
            ("queue_if_no_path", None) => Message::QueueIfNoPath,
            ("fail_if_no_path", None) => Message::FailIfNoPath,
            _ => return Err(ParseError::new("message", s)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: DevT = DevT {
        major: 8,
        minor: 16,
    };

    #[test]
    fn text_as_the_kernel_parses_it() {
        assert_eq!(Message::FailPath(DEV).to_string(), "fail_path 8:16");
        assert_eq!(
            Message::ReinstatePath(DEV).to_string(),
            "reinstate_path 8:16"
        );
        assert_eq!(Message::SwitchGroup(2).to_string(), "switch_group 2");
        assert_eq!(Message::QueueIfNoPath.to_string(), "queue_if_no_path");
    }

    #[test]
    fn round_trips() {
        for m in [
            Message::FailPath(DEV),
            Message::ReinstatePath(DevT {
                major: 259,
                minor: 1048575,
            }),
            Message::SwitchGroup(1),
            Message::EnableGroup(3),
            Message::DisableGroup(2),
            Message::QueueIfNoPath,
            Message::FailIfNoPath,
        ] {
            assert_eq!(m.to_string().parse::<Message>(), Ok(m), "{m}");
        }
    }

    #[test]
    fn refuses_what_the_kernel_would() {
        for bad in [
            "",
            "fail_path",
            "fail_path 8",
            "fail_path 8:16 extra",
            "switch_group 0",
            "switch_group x",
            "queue_if_no_path now",
            "reset",
        ] {
            assert!(bad.parse::<Message>().is_err(), "{bad:?}");
        }
    }
}

/// Randomized round trip (`cargo test fuzz`).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn message() -> impl Strategy<Value = Message> {
        let dev = (any::<u32>(), any::<u32>()).prop_map(|(major, minor)| DevT { major, minor });
        prop_oneof![
            dev.clone().prop_map(Message::FailPath),
            dev.prop_map(Message::ReinstatePath),
            (1..=u32::MAX).prop_map(Message::SwitchGroup),
            (1..=u32::MAX).prop_map(Message::EnableGroup),
            (1..=u32::MAX).prop_map(Message::DisableGroup),
            Just(Message::QueueIfNoPath),
            Just(Message::FailIfNoPath),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(m in message(), junk in "[ -~]{0,40}") {
            prop_assert_eq!(m.to_string().parse::<Message>(), Ok(m));
            if let Ok(p) = junk.parse::<Message>() {
                prop_assert_eq!(p.to_string().parse::<Message>(), Ok(p));
            }
        }
    }
}
