//! The TCP transport's framing: one request per line (`\n`, optional `\r` before it), at most
//! `max_frame_bytes` bytes a line ([`LineCodec`]).
//!
//! A line is handed over as the bytes it occupied in the read buffer (`BytesMut::split_to`:
//! no copy and no allocation of its own); the reader checks it is UTF-8 and parses it in place.
//! `tokio_util`'s `LinesCodec` copied every line into a fresh `String` first: an allocation and
//! a copy per pipelined request (issue 13).

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// One decoded line, or why there is none: a bad line is an item, so the stream survives it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A line without its `\n` (and without a `\r` before it); not yet checked for UTF-8.
    Bytes(BytesMut),
    /// No `\n` within `max_frame_bytes + 1` bytes: the connection is closed after an answer.
    TooLong,
}

/// Splits the read buffer into lines of at most `max` bytes (`max_frame_bytes`), the way
/// `tokio_util::codec::LinesCodec::new_with_max_length` does, without copying them.
pub(super) struct LineCodec {
    max: usize,
    /// Where the search for `\n` resumes: the bytes before it were searched already.
    next_index: usize,
}

impl LineCodec {
    pub(super) fn new(max: usize) -> Self {
        Self { max, next_index: 0 }
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        // A line of `max` bytes has its newline at index `max` at most.
        let read_to = buf.len().min(self.max.saturating_add(1));
        let start = self.next_index.min(read_to);
        match memchr::memchr(b'\n', &buf[start..read_to]) {
            Some(offset) => {
                self.next_index = 0;
                let end = start + offset;
                let mut line = buf.split_to(end + 1);
                line.truncate(if end > 0 && line[end - 1] == b'\r' { end - 1 } else { end });
                Ok(Some(Line::Bytes(line)))
            }
            None if buf.len() > self.max => Ok(Some(Line::TooLong)),
            None => {
                self.next_index = read_to;
                Ok(None)
            }
        }
    }

    /// At the end of the stream, what is left is the last line (as `LinesCodec` does).
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.next_index = 0;
        if buf.is_empty() {
            return Ok(None);
        }
        let mut line = buf.split_to(buf.len());
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        Ok(Some(Line::Bytes(line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<Line> {
        let mut codec = LineCodec::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(l) = codec.decode(&mut buf).expect("decode") {
                let too_long = l == Line::TooLong;
                out.push(l);
                if too_long {
                    return out;
                }
            }
        }
        while let Some(l) = codec.decode_eof(&mut buf).expect("decode_eof") {
            out.push(l);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Bytes(BytesMut::from(s))
    }

    #[test]
    fn lines_split_across_reads_with_and_without_carriage_returns() {
        let got = lines(8, &[b"ab", b"c\r\nde\n\nf", b"gh\r", b"\nlast"]);
        assert_eq!(got, vec![text("abc"), text("de"), text(""), text("fgh"), text("last")]);
    }

    #[test]
    fn a_line_of_max_bytes_passes_and_one_more_is_too_long() {
        assert_eq!(lines(4, &[b"abcd\n"]), vec![text("abcd")]);
        assert_eq!(lines(4, &[b"abc", b"de\n"]), vec![Line::TooLong]);
        assert_eq!(
            lines(4, &[b"abcd", b"\r\n"]),
            vec![Line::TooLong],
            "the \\r counts until it is seen to end the line"
        );
    }

    #[test]
    fn bytes_are_handed_over_unchecked() {
        assert_eq!(lines(8, &[b"\xff\xfe\n"]), vec![Line::Bytes(BytesMut::from(&b"\xff\xfe"[..]))]);
    }
}
