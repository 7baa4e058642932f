//! Server-sent events as both wire formats stream them: bytes in as they arrive, whole events
//! out. Only `event:` and `data:` matter here (`id:`, `retry:` and comments are skipped).

/// One event: its name (`event:`, absent for OpenAI's chunks) and its data lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// The events `bytes` completes (a line cut between two chunks waits for the next).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        let mut i = 0;
        while i < self.partial.len() {
            let b = self.partial[i];
            if b == b'\n' || b == b'\r' {
                // `\r` at the very end may be the first half of `\r\n`: wait for the next byte.
                if b == b'\r' && i + 1 == self.partial.len() {
                    break;
                }
                let line = String::from_utf8_lossy(&self.partial[start..i]).into_owned();
                let skip = if b == b'\r' && self.partial.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                i += skip;
                start = i;
                if let Some(event) = self.line(&line) {
                    events.push(event);
                }
                continue;
            }
            i += 1;
        }
        self.partial.drain(..start);
        events
    }

    /// The event a stream ended without a blank line after it, if any.
    pub fn finish(&mut self) -> Option<Event> {
        if !self.partial.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned();
            if let Some(event) = self.line(&line) {
                return Some(event);
            }
        }
        self.line("")
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(Event {
                name: self.name.take(),
                data,
            });
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.name = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out: Vec<Event> = chunks.iter().flat_map(|c| p.push(c)).collect();
        out.extend(p.finish());
        out
    }

    fn ev(name: Option<&str>, data: &str) -> Event {
        Event {
            name: name.map(str::to_string),
            data: data.into(),
        }
    }

    #[test]
    fn events_cut_anywhere_come_out_whole() {
        let stream = b": comment\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\r\ndata: y\r\n\r\ndata:[DONE]\n\n";
        let expected = vec![
            ev(Some("message_start"), "{\"a\":1}"),
            ev(None, "x\ny"),
            ev(None, "[DONE]"),
        ];
        assert_eq!(all(&[stream]), expected);
        for cut in 0..stream.len() {
            assert_eq!(
                all(&[&stream[..cut], &stream[cut..]]),
                expected,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(all(&bytes), expected);
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts() {
        assert_eq!(all(&[b"data: {}"]), vec![ev(None, "{}")]);
        assert_eq!(all(&[b"event: ping\n"]), vec![]);
    }
}
