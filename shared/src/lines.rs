//! Reading lines of untrusted input (a producer's NDJSON, an operator's
//! export file) without holding more than a limit of any one in memory.

use std::io::BufRead;

/// Reads one line of `input`, through its `\n` or the end, keeping it in
/// `line` only while it is at most `limit` bytes. Returns the bytes read
/// (0: nothing left) and whether the line fit (if not, `line` is empty and
/// the rest of the line was read and dropped).
pub fn read_line_within(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<(usize, bool)> {
    let (mut read, mut fits) = (0, true);
    loop {
        let available = match input.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok((read, fits));
        }
        let (taken, ended) = match available.iter().position(|&byte| byte == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        if fits && line.len() + taken <= limit {
            line.extend_from_slice(&available[..taken]);
        } else {
            fits = false;
            line.clear();
        }
        input.consume(taken);
        read += taken;
        if ended {
            return Ok((read, fits));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::read_line_within;

    #[test]
    fn lines_past_the_limit_are_dropped_and_the_next_is_read_whole() {
        let text = b"short\nmuch too long a line\nlast";
        let mut input = std::io::BufReader::with_capacity(4, &text[..]);
        let mut line = Vec::new();
        let mut read = |line: &mut Vec<u8>| {
            line.clear();
            read_line_within(&mut input, line, 10).unwrap()
        };
        assert_eq!(read(&mut line), (6, true));
        assert_eq!(line, b"short\n");
        assert_eq!(read(&mut line), (21, false));
        assert!(line.is_empty());
        assert_eq!(read(&mut line), (4, true));
        assert_eq!(line, b"last");
        assert_eq!(read(&mut line), (0, true));
    }
}
