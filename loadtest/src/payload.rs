//! Message content format: `<sender>:<seq>:<send_unix_nanos>:<padding>`.
//!
//! Only ASCII digits, colons and `x` padding, so it never needs JSON escaping and can be
//! cut out of a frame without a JSON parser.

use std::fmt::Write as _;

/// The fields a receiver needs from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// Global connection index of the sender.
    pub sender: u32,
    /// Per-sender sequence number, from 0.
    pub seq: u64,
    /// Send time (scheduled time in open-loop mode) in nanoseconds since the Unix epoch.
    pub sent_unix_nanos: u64,
}

/// Writes `p` into `buf` (cleared first), padded with `x` to `len` bytes when longer than the header.
pub fn encode_into(buf: &mut String, p: &Payload, len: usize) {
    buf.clear();
    // Writing to a String cannot fail.
    let _ = write!(buf, "{}:{}:{}:", p.sender, p.seq, p.sent_unix_nanos);
    while buf.len() < len {
        buf.push('x');
    }
}

/// Parses the header of a payload; None if `content` is not in our format.
pub fn decode(content: &[u8]) -> Option<Payload> {
    let mut rest = content;
    let sender = take_number(&mut rest)?;
    let seq = take_number(&mut rest)?;
    let sent_unix_nanos = take_number(&mut rest)?;
    Some(Payload {
        sender: u32::try_from(sender).ok()?,
        seq,
        sent_unix_nanos,
    })
}

/// Parses decimal digits up to a `:` and advances past it.
fn take_number(rest: &mut &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for (i, &b) in rest.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            }
            b':' if i > 0 => {
                *rest = &rest[i + 1..];
                return Some(value);
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let p = Payload {
            sender: 42,
            seq: 7,
            sent_unix_nanos: 1_767_268_800_123_456_789,
        };
        let mut buf = String::new();
        encode_into(&mut buf, &p, 64);
        assert_eq!(buf.len(), 64);
        assert!(buf.starts_with("42:7:1767268800123456789:xxx"));
        assert_eq!(decode(buf.as_bytes()), Some(p));

        encode_into(&mut buf, &p, 0);
        assert_eq!(buf, "42:7:1767268800123456789:");
        assert_eq!(decode(buf.as_bytes()), Some(p));
    }

    #[test]
    fn rejects_foreign_content() {
        for bad in [
            "",
            "hello",
            "1:2",
            "1:2:3",
            ":1:2:3:",
            "1::2:3:",
            "a:1:2:",
            "1:2:3x",
            "99999999999:1:1:",
            "1:2:99999999999999999999999:",
        ] {
            assert_eq!(decode(bad.as_bytes()), None, "{bad}");
        }
        assert!(decode(b"1:2:3:").is_some());
    }
}
