//! The one sense decoder: fixed (0x70/0x71) and descriptor (0x72/0x73) formats,
//! length-checked (SPC-5 4.4).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
    /// A deferred error (0x71/0x73): about an earlier command.
    pub deferred: bool,
}

pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const RECOVERED_ERROR: u8 = 0x1;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const BLANK_CHECK: u8 = 0x8;
    pub const COPY_ABORTED: u8 = 0xa;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const VOLUME_OVERFLOW: u8 = 0xd;
    pub const MISCOMPARE: u8 = 0xe;
}

impl Sense {
    /// None when the bytes are not valid sense data.
    pub fn parse(b: &[u8]) -> Option<Sense> {
        let code = *b.first()? & 0x7f;
        match code {
            0x70 | 0x71 => Some(Sense {
                key: b.get(2)? & 0x0f,
                // ASC/ASCQ need additional length >= 6 (bytes 12, 13); absent means 0.
                asc: if b.len() > 12 && b.get(7).copied().unwrap_or(0) >= 5 {
                    b[12]
                } else {
                    0
                },
                ascq: if b.len() > 13 && b.get(7).copied().unwrap_or(0) >= 6 {
                    b[13]
                } else {
                    0
                },
                deferred: code == 0x71,
            }),
            0x72 | 0x73 => Some(Sense {
                key: b.get(1)? & 0x0f,
                asc: b.get(2).copied().unwrap_or(0),
                ascq: b.get(3).copied().unwrap_or(0),
                deferred: code == 0x73,
            }),
            _ => None,
        }
    }

    pub fn asc_ascq(&self) -> u16 {
        u16::from(self.asc) << 8 | u16::from(self.ascq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format() {
        let b = [
            0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x02, 0, 0, 0, 0,
        ];
        assert_eq!(
            Sense::parse(&b),
            Some(Sense {
                key: 6,
                asc: 0x29,
                ascq: 0x02,
                deferred: false
            })
        );
        let mut valid_bit = b;
        valid_bit[0] = 0xf1;
        assert!(Sense::parse(&valid_bit).unwrap().deferred);
    }

    #[test]
    fn descriptor_format() {
        let b = [0x72, 0x02, 0x04, 0x0b, 0, 0, 0, 0];
        assert_eq!(Sense::parse(&b).unwrap().asc_ascq(), 0x040b);
        assert_eq!(Sense::parse(&b).unwrap().key, key::NOT_READY);
    }

    #[test]
    fn short_or_invalid() {
        assert_eq!(Sense::parse(&[]), None);
        assert_eq!(Sense::parse(&[0x70, 0]), None);
        assert_eq!(Sense::parse(&[0x00, 0, 5, 0, 0, 0, 0, 10]), None);
        // fixed format truncated before ASC: key only
        let s = Sense::parse(&[0x70, 0, 0x05, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((s.key, s.asc, s.ascq), (5, 0, 0));
    }
}
