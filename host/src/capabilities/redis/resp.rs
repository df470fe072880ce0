//! RESP2/RESP3 framing, followed byte by byte so a reply is measured
//! before it is read.
//!
//! A reply is one top-level value: a line (`+ - : _ # , (`), a
//! length-prefixed string (`$ ! =`) or an aggregate of N values (`* ~ >`,
//! `%` and `|` of N pairs). The framer counts, per top-level reply, the
//! payload bytes and the values. A string's length and an aggregate's
//! size are in its header, so a reply that will not fit is refused when
//! its header arrives, before its body is read.

use crate::capabilities::limited_stream::Framer;

/// Why the stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("the reply is larger than the {limit}-byte reply limit")]
    Bytes { limit: u64 },
    #[error("the reply has more than the {limit}-value reply limit")]
    Values { limit: u64 },
    #[error("the server sent a malformed reply ({0})")]
    Malformed(&'static str),
}

/// Longest length header accepted (`-` and 19 digits).
const MAX_HEADER: usize = 20;

#[derive(Debug)]
enum State {
    /// Expecting a value's type byte.
    Start,
    /// Inside a line value, until its LF.
    Line,
    /// Inside a length header of type `kind`, until its LF.
    Header {
        kind: u8,
        text: [u8; MAX_HEADER],
        len: usize,
    },
    /// Inside a string's body and its CRLF.
    Body { left: u64 },
}

/// Follows RESP replies and keeps the per-reply budget.
#[derive(Debug)]
pub struct RespFramer {
    max_bytes: u64,
    max_values: u64,
    state: State,
    /// Values of the current reply not finished yet (0: between replies).
    pending: u64,
    bytes: u64,
    values: u64,
}

impl RespFramer {
    pub fn new(max_bytes: u64, max_values: u64) -> Self {
        RespFramer {
            max_bytes,
            max_values,
            state: State::Start,
            pending: 0,
            bytes: 0,
            values: 0,
        }
    }

    fn start_value(&mut self) -> Result<(), Overflow> {
        if self.pending == 0 {
            self.pending = 1;
            self.bytes = 0;
            self.values = 0;
        }
        self.values += 1;
        if self.values > self.max_values {
            return Err(Overflow::Values {
                limit: self.max_values,
            });
        }
        Ok(())
    }

    fn add_bytes(&mut self, n: u64) -> Result<(), Overflow> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max_bytes {
            return Err(Overflow::Bytes {
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// The current value is complete: its slot is filled by `children`
    /// more values (0 for a scalar).
    fn finish_value(&mut self, children: u64) -> Result<(), Overflow> {
        self.pending = self.pending - 1 + children;
        // Every pending value is yet to start: refuse an aggregate that
        // announces more than fit.
        if self.values.saturating_add(self.pending) > self.max_values {
            return Err(Overflow::Values {
                limit: self.max_values,
            });
        }
        self.state = State::Start;
        Ok(())
    }

    fn header_done(&mut self, kind: u8, text: &[u8]) -> Result<(), Overflow> {
        let n: i64 = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(Overflow::Malformed("bad length"))?;
        if n == -1 && matches!(kind, b'$' | b'*') {
            // RESP2 null string or array.
            return self.finish_value(0);
        }
        let n = u64::try_from(n).map_err(|_| Overflow::Malformed("negative length"))?;
        match kind {
            b'$' | b'!' | b'=' => {
                self.add_bytes(n)?;
                self.state = State::Body { left: n + 2 };
                Ok(())
            }
            b'*' | b'~' | b'>' => self.finish_value(n),
            b'%' => self.finish_value(n.saturating_mul(2)),
            // Attributes precede the value they describe, which takes
            // this slot.
            b'|' => self.finish_value(n.saturating_mul(2).saturating_add(1)),
            _ => unreachable!("only header kinds get here"),
        }
    }
}

impl Framer for RespFramer {
    type Error = Overflow;

    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Overflow> {
        while let Some(&b) = bytes.first() {
            match &mut self.state {
                State::Start => {
                    bytes = &bytes[1..];
                    self.start_value()?;
                    self.state = match b {
                        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => State::Line,
                        b'$' | b'!' | b'=' | b'*' | b'~' | b'>' | b'%' | b'|' => State::Header {
                            kind: b,
                            text: [0; MAX_HEADER],
                            len: 0,
                        },
                        _ => return Err(Overflow::Malformed("unknown type byte")),
                    };
                }
                State::Line => {
                    let end = bytes.iter().position(|&c| c == b'\n');
                    let line = &bytes[..end.unwrap_or(bytes.len())];
                    let cr = line.iter().filter(|&&c| c == b'\r').count();
                    self.add_bytes((line.len() - cr) as u64)?;
                    match end {
                        Some(at) => {
                            bytes = &bytes[at + 1..];
                            self.finish_value(0)?;
                        }
                        None => bytes = &[],
                    }
                }
                State::Header { kind, text, len } => {
                    bytes = &bytes[1..];
                    match b {
                        b'\r' => {}
                        b'\n' => {
                            let (kind, text, len) = (*kind, *text, *len);
                            self.header_done(kind, &text[..len])?;
                        }
                        _ if *len == MAX_HEADER => {
                            return Err(Overflow::Malformed("length header too long"));
                        }
                        _ => {
                            text[*len] = b;
                            *len += 1;
                        }
                    }
                }
                State::Body { left } => {
                    let skip = (*left).min(bytes.len() as u64);
                    *left -= skip;
                    bytes = &bytes[skip as usize..];
                    if *left == 0 {
                        self.finish_value(0)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` split at every offset (and byte by byte); all
    /// verdicts must agree.
    fn verdict(max_bytes: u64, max_values: u64, stream: &[u8]) -> Result<(), Overflow> {
        let whole = RespFramer::new(max_bytes, max_values).feed(stream);
        for at in 0..=stream.len() {
            let mut f = RespFramer::new(max_bytes, max_values);
            let r = f.feed(&stream[..at]).and_then(|()| f.feed(&stream[at..]));
            assert_eq!(
                r,
                whole,
                "split at {at} of {:?}",
                String::from_utf8_lossy(stream)
            );
        }
        let mut f = RespFramer::new(max_bytes, max_values);
        let r = stream
            .iter()
            .try_for_each(|b| f.feed(std::slice::from_ref(b)));
        assert_eq!(r, whole, "byte by byte");
        whole
    }

    fn bulk(data: &[u8]) -> Vec<u8> {
        [format!("${}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat()
    }

    #[test]
    fn replies_within_the_budget_pass_and_each_reply_starts_afresh() {
        let replies = [
            b"+OK\r\n".to_vec(),
            b":12345\r\n".to_vec(),
            b"$-1\r\n".to_vec(),
            b"*-1\r\n".to_vec(),
            b"_\r\n".to_vec(),
            b"#t\r\n".to_vec(),
            b",3.14\r\n".to_vec(),
            b"(123456789012345678901234567890\r\n".to_vec(),
            b"-ERR wrong type\r\n".to_vec(),
            bulk(&[b'x'; 100]),
            [
                b"*3\r\n".to_vec(),
                bulk(b"a"),
                b"$-1\r\n".to_vec(),
                b":3\r\n".to_vec(),
            ]
            .concat(),
            [b"%1\r\n".to_vec(), bulk(b"field"), bulk(b"value")].concat(),
            b"=15\r\ntxt:Some string\r\n".to_vec(),
            b"*0\r\n".to_vec(),
        ];
        for r in &replies {
            assert_eq!(
                verdict(100, 10, r),
                Ok(()),
                "{:?}",
                String::from_utf8_lossy(r)
            );
        }
        // Each under the budget, together far over it: fine.
        assert_eq!(verdict(100, 10, &replies.concat()), Ok(()));
    }

    #[test]
    fn a_huge_string_is_refused_from_its_header() {
        assert_eq!(
            verdict(4 << 20, 10, b"$1000000000\r\n"),
            Err(Overflow::Bytes { limit: 4 << 20 })
        );
        assert_eq!(
            verdict(100, 10, &bulk(&[b'x'; 101])),
            Err(Overflow::Bytes { limit: 100 })
        );
        assert_eq!(verdict(100, 10, &bulk(&[b'x'; 100])), Ok(()));
        // Verbatim strings and blob errors count the same.
        assert_eq!(
            verdict(100, 10, b"=200\r\n"),
            Err(Overflow::Bytes { limit: 100 })
        );
        assert_eq!(
            verdict(100, 10, b"!200\r\n"),
            Err(Overflow::Bytes { limit: 100 })
        );
    }

    #[test]
    fn an_aggregate_adds_up_its_members() {
        let items: Vec<u8> = (0..4).flat_map(|_| bulk(&[b'y'; 30])).collect();
        let array = [b"*4\r\n".to_vec(), items].concat();
        assert_eq!(verdict(120, 10, &array), Ok(()));
        assert_eq!(
            verdict(119, 10, &array),
            Err(Overflow::Bytes { limit: 119 })
        );
        // Nested aggregates count towards the same top-level reply.
        let two: Vec<u8> = (0..2).flat_map(|_| bulk(&[b'y'; 30])).collect();
        let nested = [
            b"*2\r\n*2\r\n".to_vec(),
            two.clone(),
            b"*2\r\n".to_vec(),
            two,
        ]
        .concat();
        assert_eq!(verdict(120, 10, &nested), Ok(()));
        assert_eq!(
            verdict(100, 10, &nested),
            Err(Overflow::Bytes { limit: 100 })
        );
        // A long simple string or error line counts as it arrives.
        let line = [b"+".to_vec(), vec![b'z'; 101], b"\r\n".to_vec()].concat();
        assert_eq!(verdict(100, 10, &line), Err(Overflow::Bytes { limit: 100 }));
    }

    #[test]
    fn an_aggregate_announcing_too_many_values_is_refused_at_once() {
        assert_eq!(
            verdict(1 << 20, 1000, b"*100000000\r\n"),
            Err(Overflow::Values { limit: 1000 })
        );
        // A map of N pairs holds 2N values.
        assert_eq!(
            verdict(1 << 20, 10, b"%5\r\n"),
            Err(Overflow::Values { limit: 10 })
        );
        assert!(verdict(1 << 20, 11, b"%5\r\n").is_ok());
        // Many small members, each announced by its own nested header.
        let many: Vec<u8> = [b"*3\r\n".to_vec()]
            .into_iter()
            .chain((0..3).map(|_| b"*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n".to_vec()))
            .flatten()
            .collect();
        // 1 + 3 × (1 + 4) values.
        assert_eq!(verdict(1 << 20, 16, &many), Ok(()));
        assert_eq!(
            verdict(1 << 20, 15, &many),
            Err(Overflow::Values { limit: 15 })
        );
        let huge_map = format!("%{}\r\n", i64::MAX);
        assert_eq!(
            verdict(1 << 20, 10, huge_map.as_bytes()),
            Err(Overflow::Values { limit: 10 })
        );
    }

    #[test]
    fn attributes_and_pushes_are_followed() {
        // An attribute of one pair, then the reply it describes.
        let attr = [
            b"|1\r\n".to_vec(),
            bulk(b"ttl"),
            b":3600\r\n".to_vec(),
            bulk(b"value"),
            b"+OK\r\n".to_vec(),
        ]
        .concat();
        assert_eq!(verdict(100, 10, &attr), Ok(()));
        let push = [b">2\r\n".to_vec(), bulk(b"message"), bulk(b"hello")].concat();
        assert_eq!(verdict(100, 10, &push), Ok(()));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            verdict(100, 10, b"?what\r\n"),
            Err(Overflow::Malformed(_))
        ));
        assert!(matches!(
            verdict(100, 10, b"$abc\r\n"),
            Err(Overflow::Malformed(_))
        ));
        assert!(matches!(
            verdict(100, 10, b"$-2\r\n"),
            Err(Overflow::Malformed(_))
        ));
        assert!(matches!(
            verdict(100, 10, b"%-1\r\n"),
            Err(Overflow::Malformed(_))
        ));
        assert!(matches!(
            verdict(100, 10, b"$123456789012345678901\r\n"),
            Err(Overflow::Malformed(_))
        ));
    }
}
