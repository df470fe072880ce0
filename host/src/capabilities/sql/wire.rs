//! The PostgreSQL backend protocol's framing, followed byte by byte so a
//! reply is measured before it is read.
//!
//! Every backend message is a type byte, a 4-byte big-endian length
//! (counting itself) and a body. The framer refuses a message whose body
//! is over the limit, and the rows of one statement (`DataRow`, and
//! `CopyData` for `COPY ... TO STDOUT`) once they add up to more than the
//! limit, as soon as the header that goes over arrives. The row budget
//! starts again at every `ReadyForQuery`, which closes each statement.
//! This assumes a plain (non-TLS) stream that starts with a backend
//! message, which is what mend opens.

use crate::capabilities::limited_stream::Framer;

const DATA_ROW: u8 = b'D';
const COPY_DATA: u8 = b'd';
const READY_FOR_QUERY: u8 = b'Z';
const ERROR_RESPONSE: u8 = b'E';
const NOTICE_RESPONSE: u8 = b'N';

/// Why the stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    /// The rows of one statement (or one row) are over the limit.
    #[error("the result is larger than {limit} bytes")]
    Rows { limit: u64 },
    /// Another single message is over the limit (e.g. an error message
    /// that quotes a huge value).
    #[error("the server's {what} is larger than {limit} bytes")]
    Message { what: &'static str, limit: u64 },
    #[error("the server sent a malformed message (type {tag:?}, length {length})")]
    Malformed { tag: char, length: i32 },
}

/// Follows backend messages and keeps the per-statement row budget.
#[derive(Debug)]
pub struct BackendFramer {
    limit: u64,
    header: [u8; 5],
    header_len: usize,
    /// Body bytes still to skip in the current message.
    body_left: u64,
    /// Row bytes of the current statement so far.
    rows: u64,
}

impl BackendFramer {
    pub fn new(limit: u64) -> Self {
        BackendFramer {
            limit,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            rows: 0,
        }
    }

    /// One complete header: check it against the budget.
    fn header(&mut self) -> Result<(), Overflow> {
        let tag = self.header[0];
        let length = i32::from_be_bytes([
            self.header[1],
            self.header[2],
            self.header[3],
            self.header[4],
        ]);
        if length < 4 {
            return Err(Overflow::Malformed {
                tag: tag as char,
                length,
            });
        }
        let body = (length - 4) as u64;
        match tag {
            DATA_ROW | COPY_DATA => {
                self.rows += body;
                if self.rows > self.limit {
                    return Err(Overflow::Rows { limit: self.limit });
                }
            }
            READY_FOR_QUERY => self.rows = 0,
            _ if body > self.limit => {
                let what = match tag {
                    ERROR_RESPONSE => "error message",
                    NOTICE_RESPONSE => "notice",
                    _ => "reply",
                };
                return Err(Overflow::Message {
                    what,
                    limit: self.limit,
                });
            }
            _ => {}
        }
        self.body_left = body;
        Ok(())
    }
}

impl Framer for BackendFramer {
    type Error = Overflow;

    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Overflow> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len() as u64);
                self.body_left -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            let take = (5 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len == 5 {
                self.header_len = 0;
                self.header()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    /// A header claiming `body` bytes, without the body.
    fn header(tag: u8, body: u64) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body + 4) as i32).to_be_bytes());
        m
    }

    /// Feeds `stream` cut at `at` (and whole), expecting the same verdict.
    fn verdict_at_every_split(limit: u64, stream: &[u8]) -> Result<(), Overflow> {
        let whole = BackendFramer::new(limit).feed(stream);
        for at in 0..=stream.len() {
            let mut f = BackendFramer::new(limit);
            let r = f.feed(&stream[..at]).and_then(|()| f.feed(&stream[at..]));
            assert_eq!(r, whole, "split at {at}");
        }
        // And one byte at a time.
        let mut f = BackendFramer::new(limit);
        let r = stream
            .iter()
            .try_for_each(|b| f.feed(std::slice::from_ref(b)));
        assert_eq!(r, whole, "byte by byte");
        whole
    }

    fn statement(rows: &[&[u8]]) -> Vec<u8> {
        let mut s = msg(b'1', b"");
        s.extend(msg(b'T', b"\0\x01col\0"));
        for r in rows {
            s.extend(msg(DATA_ROW, r));
        }
        s.extend(msg(b'C', b"SELECT 2\0"));
        s.extend(msg(READY_FOR_QUERY, b"I"));
        s
    }

    #[test]
    fn rows_within_the_limit_pass_and_the_budget_restarts_each_statement() {
        let one = statement(&[&[b'x'; 40], &[b'y'; 60]]);
        assert_eq!(verdict_at_every_split(100, &one), Ok(()));
        // Three statements of 100 bytes each: fine under a 100-byte limit.
        let three = [one.clone(), one.clone(), one].concat();
        assert_eq!(verdict_at_every_split(100, &three), Ok(()));
    }

    #[test]
    fn rows_over_the_limit_in_total_are_refused() {
        let s = statement(&[&[b'x'; 60], &[b'y'; 41]]);
        assert_eq!(
            verdict_at_every_split(100, &s),
            Err(Overflow::Rows { limit: 100 })
        );
        // COPY ... TO STDOUT rows count the same.
        let mut copy = msg(b'H', &[0, 0, 1, 0, 0]);
        copy.extend(msg(COPY_DATA, &[b'a'; 70]));
        copy.extend(msg(COPY_DATA, &[b'b'; 70]));
        assert_eq!(
            verdict_at_every_split(100, &copy),
            Err(Overflow::Rows { limit: 100 })
        );
    }

    #[test]
    fn a_huge_row_is_refused_from_its_header_alone() {
        // 400 MB announced, none of it sent.
        let mut s = msg(b'1', b"");
        s.extend(msg(b'T', b"\0\x01col\0"));
        s.extend(header(DATA_ROW, 400_000_000));
        assert_eq!(
            verdict_at_every_split(4 << 20, &s),
            Err(Overflow::Rows { limit: 4 << 20 })
        );
    }

    #[test]
    fn any_other_message_over_the_limit_is_refused() {
        let s = header(ERROR_RESPONSE, 1_000_000);
        assert_eq!(
            verdict_at_every_split(1000, &s),
            Err(Overflow::Message {
                what: "error message",
                limit: 1000
            })
        );
        let s = [msg(NOTICE_RESPONSE, &[b'n'; 1000]), header(b'N', 1001)].concat();
        assert_eq!(
            verdict_at_every_split(1000, &s),
            Err(Overflow::Message {
                what: "notice",
                limit: 1000
            })
        );
        // Many messages just under the limit are fine: they are not rows.
        let many: Vec<u8> = (0..10)
            .flat_map(|_| msg(NOTICE_RESPONSE, &[b'n'; 1000]))
            .collect();
        assert_eq!(verdict_at_every_split(1000, &many), Ok(()));
    }

    #[test]
    fn a_length_below_four_is_malformed() {
        let s = [b'D', 0, 0, 0, 3];
        assert!(matches!(
            verdict_at_every_split(100, &s),
            Err(Overflow::Malformed {
                tag: 'D',
                length: 3
            })
        ));
        let s = [b'D', 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            verdict_at_every_split(100, &s),
            Err(Overflow::Malformed { length: -1, .. })
        ));
    }
}
